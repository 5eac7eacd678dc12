"""Real markets for integration tests: any database URL, any access policy, TLS or not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdock.common.errors import LmdockError
from lmdock.common.profile import SpecProfile
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.server.app import ServerSettings, ServerTLS, create_server
from lmdock.server.auth import AccessPolicy
from lmdock.server.base_models import BaseModels
from lmdock.server.market import CHANGE_POLL_S, Market, MarketLimits
from lmdock.server.observability import Observer

TINY_BERT = "tiny-bert"


@dataclass
class Running:
    address: str
    market: Market
    port: int


@contextmanager
def running_market(
    data_dir: Path,
    profile: SpecProfile,
    *,
    db_url: str = "",
    base_models: dict[str, Path] | None = None,
    allow_local_base_models: bool = False,
    access: AccessPolicy | None = None,
    tls: ServerTLS | None = None,
    settings: ServerSettings | None = None,
    limits: MarketLimits | None = None,
    observer: Observer | None = None,
    grace: float | None = None,
    change_poll_s: float = CHANGE_POLL_S,
    added_profiles: tuple[SpecProfile, ...] = (),
    task_vector_profiles: tuple[TaskVectorProfile, ...] = (),
) -> Iterator[Running]:
    market = Market.open(
        data_dir,
        profile=profile,
        db_url=db_url,
        change_poll_s=change_poll_s,
        limits=limits or MarketLimits(),
        base_models=BaseModels(base_models or {}, allow_local_paths=allow_local_base_models),
        added_profiles=added_profiles,
        task_vector_profiles=task_vector_profiles,
    )
    server, port = create_server(
        market,
        address="127.0.0.1:0",
        access=access,
        tls=tls,
        settings=settings or ServerSettings(),
        observer=observer,
    )
    server.start()
    try:
        yield Running(address=f"127.0.0.1:{port}", market=market, port=port)
    finally:
        server.stop(grace=grace)
        market.close()


def status_of(call: Any) -> str:
    """'OK', or the status name of the typed error the call raised."""
    try:
        result = call()
        if hasattr(result, "__next__"):
            list(result)
    except LmdockError as exc:
        return exc.status
    return "OK"
