"""An in-process market on 127.0.0.1 for the demo, evaluations and tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmdock.common.profile import SpecProfile
from lmdock.server.app import ServerSettings, create_server
from lmdock.server.auth import AccessPolicy
from lmdock.server.base_models import BaseModels
from lmdock.server.config import load_or_create_profile
from lmdock.server.limits import RateLimits
from lmdock.server.market import Market

__all__ = ["embedded_market"]


@contextmanager
def embedded_market(data_dir: Path, *, profile: SpecProfile | None = None) -> Iterator[tuple[str, Market]]:
    """Serve a SQLite + local-disk market from `data_dir`; yields (address, market).

    It is local and single-user: anonymous callers may search and publish, base models may be
    named by their local folder, and there is no per-caller rate limit (an evaluation plays
    thousands of users from one address).
    """
    market = Market.open(
        data_dir,
        profile=load_or_create_profile(data_dir, requested=profile),
        base_models=BaseModels(allow_local_paths=True),
    )
    settings = ServerSettings(rate_limits=RateLimits(calls_per_second=0))
    server, port = create_server(
        market, address="127.0.0.1:0", access=AccessPolicy.open_demo(), settings=settings
    )
    server.start()
    try:
        yield f"127.0.0.1:{port}", market
    finally:
        server.stop(grace=None)
        market.close()
