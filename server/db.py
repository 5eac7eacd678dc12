"""The market's database: one engine, sessions, and Alembic migrations run at open.

`Database(url)` accepts any SQLAlchemy URL; lmdock tests SQLite (`sqlite:///path`, the
embedded default) and PostgreSQL (`postgresql+psycopg://user@host:port/db`, psycopg 3).
The migrations ship inside the package (`lmdock.server.migrations`), so a wheel can migrate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from lmdock.common.errors import FailedPrecondition, InvalidArgument
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "migrate", "utc_now"]

MIGRATIONS = "lmdock.server:migrations"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA busy_timeout=10000")  # `lmdock-market keys` may write while serving
    cursor.close()


def _refuse_nul(
    _conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, executemany: bool
) -> None:
    """No text value holds a NUL character, on any backend: PostgreSQL's text cannot (psycopg
    raises DataError, which a caller would get as INTERNAL), so SQLite refuses them too."""
    for row in parameters if executemany else [parameters]:
        values = row.values() if isinstance(row, Mapping) else row or ()
        if any(isinstance(value, str) and "\0" in value for value in values):
            raise InvalidArgument("text may not contain NUL characters")


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent)."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        event.listen(self.engine, "before_cursor_execute", _refuse_nul)
        try:
            migrate(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            raise FailedPrecondition(f"cannot open the market database: {exc.orig}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
