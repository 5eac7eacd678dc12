"""Stalled and slow streams cannot starve the market (issue 14, item 5).

On grpc's thread pool, 16 worker threads and 4 streams per caller: four keys that opened
Uploads and stopped sending froze Health and List. The market now runs on grpc.aio: a stalled
stream holds a slot but no thread, streams have a global cap below the cap on concurrent
calls, and idle and total time limits close what a caller stops feeding. Undecodable request
bytes are refused after authentication with INVALID_ARGUMENT (grpc answered INTERNAL with a
traceback, before any check, unlogged).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lmdock.client.connection import MarketClient
from lmdock.server.app import ServerSettings
from lmdock.server.auth import AccessPolicy
from lmdock.server.limits import RateLimits, StreamLimits
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

from tests.helpers import make_adapter
from tests.market_helpers import TINY_BERT, running_market
from tests.test_upload_checks import package

OPEN = AccessPolicy.open_demo()


def stalled_upload(channel: grpc.Channel, release: threading.Event, *, size: int = 1000) -> grpc.Future:
    """An Upload that sends its header and one chunk, then nothing until `release`."""

    def requests() -> Iterator[pb.UploadRequest]:
        yield pb.UploadRequest(header=pb.UploadHeader(sha256="a" * 64, size=size))
        yield pb.UploadRequest(chunk=b"x" * 10)
        release.wait()

    return pb_grpc.MarketServiceStub(channel).Upload.future(requests(), timeout=30)


def health_ms(channel: grpc.Channel) -> float:
    started = time.perf_counter()
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return (time.perf_counter() - started) * 1000


def temp_files(running) -> list[Path]:
    return [p for p in (running.market.blobs.root / "tmp").rglob("*") if p.is_file()]


def test_health_and_list_are_served_beside_more_stalled_uploads_than_workers(tmp_path: Path, profile) -> None:
    # 4 workers, 12 stalled uploads (no per-caller cap: each stands in for an attacker's key)
    settings = ServerSettings(
        max_workers=4, rate_limits=RateLimits(calls_per_second=0), stream_limits=StreamLimits(per_caller=0)
    )
    release = threading.Event()
    with running_market(tmp_path / "m", profile, access=OPEN, settings=settings) as market:
        channels = [grpc.insecure_channel(market.address) for _ in range(12)]
        try:
            stalled = [stalled_upload(ch, release) for ch in channels]
            time.sleep(0.5)  # every upload has its header in
            with grpc.insecure_channel(market.address) as probe:
                latencies = [health_ms(probe) for _ in range(10)]
                listed = pb_grpc.MarketServiceStub(probe).ListLearnwares(
                    pb.ListLearnwaresRequest(), timeout=2
                )
            assert max(latencies) < 500 and list(listed.learnwares) == []
            assert not any(f.done() for f in stalled)
        finally:
            release.set()
            for ch in channels:
                ch.close()


def test_the_global_stream_cap_refuses_more_streams_but_not_unary_calls(tmp_path: Path, profile) -> None:
    settings = ServerSettings(stream_limits=StreamLimits(per_caller=0, total=3))
    release = threading.Event()
    with (
        running_market(tmp_path / "m", profile, access=OPEN, settings=settings) as market,
        grpc.insecure_channel(market.address) as channel,
    ):
        try:
            held = [stalled_upload(channel, release) for _ in range(3)]
            time.sleep(0.5)
            refused = stalled_upload(channel, release)
            with pytest.raises(grpc.RpcError) as caught:
                refused.result(timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit of 3 streams" in caught.value.details()
            assert health_ms(channel) < 500
            assert not any(f.done() for f in held)
        finally:
            release.set()


def test_an_idle_upload_is_closed_and_leaves_nothing(tmp_path: Path, profile) -> None:
    settings = ServerSettings(stream_limits=StreamLimits(idle_seconds=0.5, max_seconds=10))
    release = threading.Event()
    with (
        running_market(tmp_path / "m", profile, access=OPEN, settings=settings) as market,
        grpc.insecure_channel(market.address) as channel,
    ):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stalled_upload(channel, release).result(timeout=10)
        release.set()
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "sent nothing for 0.5s" in caught.value.details()
        assert time.monotonic() - started < 5
        time.sleep(0.2)  # the handler's clean-up runs after the status is sent
        assert temp_files(market) == []


def test_a_trickling_upload_is_closed_at_the_total_limit(tmp_path: Path, profile) -> None:
    settings = ServerSettings(stream_limits=StreamLimits(idle_seconds=0.5, max_seconds=1.0))
    with running_market(tmp_path / "m", profile, access=OPEN, settings=settings) as market:

        def trickle() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(header=pb.UploadHeader(sha256="a" * 64, size=10_000))
            for _ in range(100):  # one byte every 0.2 s: never idle, never done
                time.sleep(0.2)
                yield pb.UploadRequest(chunk=b"x")

        with grpc.insecure_channel(market.address) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                pb_grpc.MarketServiceStub(channel).Upload(trickle(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "at most 1s" in caught.value.details()
            time.sleep(0.2)
            assert temp_files(market) == []


def raw_call(channel: grpc.Channel, method: str, payload: bytes, *, streaming: bool = False) -> grpc.RpcError:
    path = f"/lmdock.v1.MarketService/{method}"
    with pytest.raises(grpc.RpcError) as caught:
        if streaming:
            channel.stream_unary(path)(iter([payload]), timeout=5)
        else:
            channel.unary_unary(path)(payload, timeout=5)
    return caught.value


def test_undecodable_request_bytes_are_invalid_argument_counted_and_logged(
    tmp_path: Path, profile, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"\xff\xff\xff\xff\x0f"  # a truncated varint: no message decodes from it
    with (
        running_market(tmp_path / "m", profile, access=OPEN) as market,
        grpc.insecure_channel(market.address) as channel,
        caplog.at_level(logging.INFO),
    ):
        for method in ("Search", "ListLearnwares", "GetLearnware"):
            error = raw_call(channel, method, garbage)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert f"the {method} request is not a valid message" in error.details()
        error = raw_call(channel, "Upload", garbage, streaming=True)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert health_ms(channel) < 500
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    access = [r.getMessage() for r in caplog.records if r.name == "lmdock.market.access"]
    assert sum('"code": "INVALID_ARGUMENT"' in line for line in access) == 4


def test_an_unauthenticated_caller_is_refused_before_its_bytes_are_read(tmp_path: Path, profile) -> None:
    with (
        running_market(tmp_path / "m", profile) as market,
        grpc.insecure_channel(market.address) as channel,
    ):  # publishing needs a key here
        error = raw_call(channel, "Upload", b"\xff\xff", streaming=True)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_download_is_served_whole_and_resumed(tmp_path: Path, tiny_bert: Path, profile) -> None:
    """The aio Download reads the blob on a worker, chunk by chunk, from any offset."""
    adapter = make_adapter(tiny_bert, tmp_path / "adapter", base_name=TINY_BERT)
    pkg = package(tmp_path, adapter, profile, learnware_id="whole")
    data = pkg.read_bytes()
    with running_market(tmp_path / "m", profile, access=OPEN, base_models={TINY_BERT: tiny_bert}) as market:
        with MarketClient(market.address) as client:
            client.upload(pkg)
        with grpc.insecure_channel(market.address) as channel:
            stub = pb_grpc.MarketServiceStub(channel)
            offset = len(data) // 3
            parts = list(stub.Download(pb.DownloadRequest(learnware_id="whole", offset=offset), timeout=10))
            assert parts[0].header.sha256 == hashlib.sha256(data).hexdigest()
            assert b"".join(p.chunk for p in parts[1:]) == data[offset:]


def test_a_download_its_caller_stops_reading_is_closed_at_the_idle_limit(
    tmp_path: Path, tiny_bert: Path, profile
) -> None:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter", base_name=TINY_BERT)
    pkg = package(tmp_path, adapter, profile, learnware_id="big")
    settings = ServerSettings(stream_limits=StreamLimits(idle_seconds=1.0, max_seconds=60))
    with running_market(
        tmp_path / "m", profile, access=OPEN, base_models={TINY_BERT: tiny_bert}, settings=settings
    ) as market:
        with MarketClient(market.address) as client:
            client.upload(pkg)
        # a package larger than what the caller's transport buffers unread (a few MiB): here the
        # stored blob is overwritten in place, since the market streams the file it has
        blob = market.market.blobs.root / market.market.get("big").package_sha256[:2]
        next(blob.iterdir()).write_bytes(b"\0" * (24 * 2**20))
        with grpc.insecure_channel(market.address) as channel:
            call = pb_grpc.MarketServiceStub(channel).Download(
                pb.DownloadRequest(learnware_id="big"), timeout=30
            )
            assert next(call).header.learnware_id == "big"
            time.sleep(3)  # read nothing more
            with pytest.raises(grpc.RpcError) as caught:
                for _ in call:
                    pass
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "read nothing for 1s" in caught.value.details()
            assert health_ms(channel) < 500
