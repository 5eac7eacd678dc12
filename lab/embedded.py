"""An in-process market on 127.0.0.1 for the demo, evaluations and tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmdock.common.profile import SpecProfile
from lmdock.server.app import create_server
from lmdock.server.auth import AccessPolicy
from lmdock.server.base_models import BaseModels
from lmdock.server.config import load_or_create_profile
from lmdock.server.market import Market

__all__ = ["embedded_market"]


@contextmanager
def embedded_market(data_dir: Path, *, profile: SpecProfile | None = None) -> Iterator[tuple[str, Market]]:
    """Serve a SQLite + local-disk market from `data_dir`; yields (address, market).

    It is local and single-user: anonymous callers may search and publish, and base models may
    be named by their local folder.
    """
    market = Market.open(
        data_dir,
        profile=load_or_create_profile(data_dir, requested=profile),
        base_models=BaseModels(allow_local_paths=True),
    )
    server, port = create_server(market, address="127.0.0.1:0", access=AccessPolicy.open_demo())
    server.start()
    try:
        yield f"127.0.0.1:{port}", market
    finally:
        server.stop(grace=None).wait()
        market.close()
