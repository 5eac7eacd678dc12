"""Alembic environment: migrates the connection `lmdock.server.db.migrate` hands over.

Run by hand (`alembic -x url=postgresql+psycopg://...`) it connects to that URL instead.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from lmdock.server.tables import Base
from sqlalchemy import create_engine


def _run(connection: Any) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


_handed_over = context.config.attributes.get("connection")
if _handed_over is not None:
    _run(_handed_over)
else:
    with create_engine(context.get_x_argument(as_dictionary=True)["url"]).begin() as _connection:
        _run(_connection)
