"""Downloads: retried with backoff on UNAVAILABLE only, resumed from the partial file."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient, WireRecorder
from lmdock.client.daemon.market_link import fetch_learnware, retry_unavailable
from lmdock.common.errors import LmdockError, NotFound, error_for_status
from lmdock.lab.embedded import embedded_market
from lmdock.server.app import create_server
from lmdock.server.auth import AccessPolicy
from lmdock.server.base_models import BaseModels
from lmdock.server.config import load_or_create_profile
from lmdock.server.market import Market
from lmdock.v1 import market_pb2 as pb

from tests.daemon_support import TRIAGE, packages, publish

__all__ = ["packages"]  # the fixture, imported for pytest


def _flaky(failures: list[LmdockError]):
    calls = []

    def call() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "done"

    return call, calls


def test_only_unavailable_is_retried_with_growing_waits() -> None:
    waits: list[float] = []
    unavailable = [error_for_status("UNAVAILABLE", "down"), error_for_status("UNAVAILABLE", "down")]
    call, calls = _flaky(unavailable)
    assert retry_unavailable(call, attempts=5, backoff_s=0.5, what="x", sleep=waits.append) == "done"
    assert len(calls) == 3 and waits == [0.5, 1.0]

    call, calls = _flaky([NotFound("no such learnware")])
    with pytest.raises(NotFound):
        retry_unavailable(call, attempts=5, backoff_s=0.5, what="x", sleep=waits.append)
    assert len(calls) == 1

    call, calls = _flaky([error_for_status("UNAVAILABLE", "down")] * 3)
    with pytest.raises(LmdockError, match="down"):
        retry_unavailable(call, attempts=3, backoff_s=0.1, what="x", sleep=lambda s: None)
    assert len(calls) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_download_waits_for_the_market_to_come_back(packages: list[Path], tmp_path: Path, profile) -> None:
    data_dir = tmp_path / "market"
    market = Market.open(
        data_dir,
        profile=load_or_create_profile(data_dir, requested=profile),
        base_models=BaseModels(allow_local_paths=True),
    )
    port = _free_port()
    address = f"127.0.0.1:{port}"
    servers = []

    def serve() -> None:
        server, _ = create_server(market, address=address, access=AccessPolicy.open_demo())
        server.start()
        servers.append(server)

    serve()
    publish(address, packages)
    servers.pop().stop(grace=None)
    waits: list[float] = []

    def sleep_then_restart(seconds: float) -> None:
        waits.append(seconds)
        if not servers:
            serve()

    cache = AdapterCache(tmp_path / "cache")
    progress: list[tuple[int, int]] = []
    try:
        manifest = fetch_learnware(
            lambda: MarketClient(address, timeout=5),
            cache,
            TRIAGE,
            attempts=3,
            backoff_s=0.01,
            sleep=sleep_then_restart,
            progress=lambda d, t: progress.append((d, t)),
        )
    finally:
        for server in servers:
            server.stop(grace=None)
        market.close()
    assert manifest.card.id == TRIAGE and cache.load(TRIAGE).card.id == TRIAGE
    assert waits == [0.01]
    assert progress[-1][0] == progress[-1][1] > 0


def test_a_partial_download_is_resumed(packages: list[Path], tmp_path: Path, profile) -> None:
    cache = AdapterCache(tmp_path / "cache")
    recorder = WireRecorder(keep=True)
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        publish(address, packages)
        with MarketClient(address, recorder=recorder) as client:
            info = client.get(TRIAGE)
            whole = packages[0].read_bytes()
            half = len(whole) // 2
            partial = cache.partial_path(info.package_sha256)
            partial.parent.mkdir(parents=True)
            partial.write_bytes(whole[:half])
        fetch_learnware(
            lambda: MarketClient(address, recorder=recorder), cache, TRIAGE, attempts=2, backoff_s=0.01
        )
    assert cache.load(TRIAGE).card.id == TRIAGE and not partial.exists()
    offsets = [pb.DownloadRequest.FromString(m).offset for m in recorder.messages]
    assert half in offsets  # the download asked only for the missing second half
