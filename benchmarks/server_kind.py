"""Is Health answered while stalled streams hold the server? grpc's thread pool vs grpc.aio.

K callers each open an Upload, send its header and then nothing (a slow or hostile publisher).
While they stall, Health.Check is called C times with a deadline; we count answers and time
them. Server kinds:

- thread_pool: the real market, built by `lmdock.server.app.create_server` (16 workers), open
  to anonymous publishers and without the per-caller stream cap, so that K stalled streams
  stand in for K attackers with a key each;
- aio: a minimal grpc.aio server with the same services (its Upload only reads the stream),
  a prototype of what the market would run on.

Prints one JSON object:

    python benchmarks/server_kind.py [--stalled 0,14,16,24,64] [--checks 10] [--deadline 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lmdock.common.profile_factory import make_profile
from lmdock.server.app import ServerSettings, create_server
from lmdock.server.auth import AccessPolicy
from lmdock.server.limits import RateLimits
from lmdock.server.market import Market
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

SETTINGS = ServerSettings(rate_limits=RateLimits(streams_per_caller=0))


@contextmanager
def thread_pool_market() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        market = Market.open(Path(tmp), profile=make_profile())
        server, port = create_server(market, access=AccessPolicy.open_demo(), settings=SETTINGS)
        server.start()
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.stop(None)
            market.close()


class _AioMarket(pb_grpc.MarketServiceServicer):
    async def Upload(
        self, request_iterator: AsyncIterator[pb.UploadRequest], context: grpc.aio.ServicerContext
    ) -> pb.UploadResponse:
        async for _ in request_iterator:  # a stalled stream waits here without holding a thread
            pass
        return pb.UploadResponse()


@contextmanager
def aio_server() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(maximum_concurrent_rpcs=SETTINGS.max_concurrent_rpcs)
        pb_grpc.add_MarketServiceServicer_to_server(_AioMarket(), server)
        checks = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        await checks.set("", health_pb2.HealthCheckResponse.SERVING)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


def stall_uploads(address: str, k: int, release: threading.Event) -> list[threading.Thread]:
    """K Uploads that send a header, then wait for `release` before ending their stream."""

    def one() -> None:
        def requests() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(header=pb.UploadHeader(sha256="0" * 64, size=1))
            release.wait()

        # the truncated upload is refused in the end: only the stall matters
        with grpc.insecure_channel(address) as channel, contextlib.suppress(grpc.RpcError):
            pb_grpc.MarketServiceStub(channel).Upload(requests(), timeout=120)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(k)]
    for thread in threads:
        thread.start()
    return threads


def health_checks(address: str, checks: int, deadline: float) -> dict[str, object]:
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(checks):
            started = time.perf_counter()
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=deadline)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1
            latencies.append(1000 * (time.perf_counter() - started))
    return {
        "codes": dict(codes),
        "p50_ms": round(statistics.median(latencies), 1),
        "max_ms": round(max(latencies), 1),
    }


def measure(
    server: Callable[[], AbstractContextManager[str]], stalled: list[int], checks: int, deadline: float
) -> dict[str, object]:
    out: dict[str, object] = {}
    for k in stalled:
        with server() as address:
            health_checks(address, 2, 5.0)  # warm the channel path and the server
            release = threading.Event()
            threads = stall_uploads(address, k, release)
            time.sleep(1.0)  # let every stream reach its handler
            out[str(k)] = health_checks(address, checks, deadline)
            release.set()
            for thread in threads:
                thread.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", default="0,14,16,24,64", help="numbers of stalled streams to try")
    parser.add_argument("--checks", type=int, default=10)
    parser.add_argument("--deadline", type=float, default=0.5, help="seconds per Health.Check")
    args = parser.parse_args()
    stalled = [int(k) for k in args.stalled.split(",")]
    result = {
        "max_workers": SETTINGS.max_workers,
        "checks": args.checks,
        "deadline_s": args.deadline,
        "health_by_stalled_streams": {
            "thread_pool": measure(thread_pool_market, stalled, args.checks, args.deadline),
            "aio": measure(aio_server, stalled, args.checks, args.deadline),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
