"""Search QPS with 1, 8 and 32 callers, next to a bare grpc.aio echo in the same run.

One market in this process as `lmdock-market serve` builds it (SQLite, the default profile,
the `--index` backend, API keys required; the per-caller rate limit off, so that the callers'
own pace is what is measured) with `--learnwares` listed learnwares of exact specs, clustered
like real ones (`search.py`'s generator; the query is a noisy copy of one of them), and
beside it a bare grpc.aio server whose Echo answers its request (`raw_grpc.py`).

The callers run in a process of their own (grpc.aio, one coroutine per caller, calling in a
loop for `--seconds`), and send the same bytes to both servers: a serialised SearchRequest
(top_k 5) with an API key in its metadata (`authorization: Bearer ...`), so the two differ
only in what the server does with them. WhoAmI, beside them, costs the market's edge alone
(interceptors, the API key, a handler) without the index; and with 8 callers, Search again on
a market that reads the API key's row on every call (`api_key_ttl_s=0`, as before the key
cache). Prints one JSON object with the QPS of each, Search's ratio to the echo and the
p50/p99 latency, per number of callers:

    python benchmarks/rpc.py [--learnwares 10000] [--index exact|hnsw|ivf] [--callers 1,8,32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from lmdock.common import serde
from lmdock.common.card import Card
from lmdock.common.market_types import LearnwareInfo
from lmdock.common.package import TaskInfo
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import EXACT, Spec
from lmdock.server.app import ServerSettings, create_server
from lmdock.server.identity import Role
from lmdock.server.index.backends import BACKENDS
from lmdock.server.limits import RateLimits
from lmdock.server.market import Market
from lmdock.server.workers import one_blas_thread
from lmdock.v1 import market_pb2 as pb
from raw_grpc import RawServer
from search import query_specs, spec_rows

SEARCH = "/lmdock.v1.MarketService/Search"
WHOAMI = "/lmdock.v1.MarketService/WhoAmI"  # the market's edge alone: interceptors, auth, a handler
ECHO = "/raw.Raw/Echo"


def _same(data: bytes) -> bytes:
    return data


async def _callers(port: int, method: str, request: bytes, key: str, callers: int, seconds: float) -> dict:
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method, request_serializer=_same, response_deserializer=_same)
        metadata = (("authorization", f"Bearer {key}"),)
        await call(request, metadata=metadata, timeout=30)  # connected and warm before the clock
        stop = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                await call(request, metadata=metadata, timeout=30)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "qps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2),
    }


def _client_main(argv: list[str]) -> None:
    port, method, request_file, key, callers, seconds = argv
    request = Path(request_file).read_bytes()
    print(json.dumps(asyncio.run(_callers(int(port), method, request, key, int(callers), float(seconds)))))


def _measure(port: int, method: str, request_file: Path, key: str, callers: int, seconds: float) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--client",
            str(port),
            method,
            str(request_file),
            key,
            str(callers),
            str(seconds),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout))


def listed_learnwares(profile_id: str, rows: np.ndarray) -> list[LearnwareInfo]:
    return [
        LearnwareInfo(
            card=Card(id=f"lw-{i:07d}", name=f"lw {i}", domain="bench", licence="MIT", publisher="acme"),
            base_model="sentence-transformers/all-MiniLM-L6-v2",
            task=TaskInfo("classification", ("no", "yes")),
            spec=Spec(profile_id=profile_id, values=values, privacy=EXACT),
            package_sha256=f"{i:064x}",
            package_size=1,
            created_at="2026-01-01T00:00:00+00:00",
        )
        for i, values in enumerate(rows)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--learnwares", type=int, default=10_000)
    parser.add_argument("--callers", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--index", choices=BACKENDS, default="exact", help="default: exact")
    parser.add_argument(
        "--blas-threads",
        choices=("one", "library"),
        default="one",
        help="one BLAS thread, as lmdock-market serve runs (default), or the BLAS library's own count",
    )
    args = parser.parse_args()
    if args.blas_threads == "one":
        one_blas_thread()
    profile = make_profile()
    with tempfile.TemporaryDirectory(prefix="lmdock-rpc-") as tmp:
        work = Path(tmp)
        seeded = Market.open(work / "market", profile=profile)  # listed without blobs: Search only
        rng = np.random.default_rng(0)
        rows = spec_rows("clustered", args.learnwares, rng)
        seeded.catalogue.add_many(listed_learnwares(profile.profile_id, rows))
        seeded.close()
        market = Market.open(work / "market", profile=profile, index=args.index)
        _, key = market.api_keys.create("bench", Role.CONSUMER)
        settings = ServerSettings(rate_limits=RateLimits(calls_per_second=0))
        server, port = create_server(market, settings=settings)
        server.start()
        raw = RawServer(work)
        query = query_specs("clustered", rows, 0.0, 1, rng)[0]
        query = Spec(profile_id=profile.profile_id, values=query.values, privacy=EXACT)
        request_file, empty = work / "search.bin", work / "empty.bin"
        request_file.write_bytes(pb.SearchRequest(spec=serde.spec_to_pb(query), top_k=5).SerializeToString())
        empty.write_bytes(b"")
        rows = []
        try:
            for callers in (int(c) for c in args.callers.split(",")):
                search = _measure(port, SEARCH, request_file, key, callers, args.seconds)
                echo = _measure(raw.port, ECHO, request_file, key, callers, args.seconds)
                whoami = _measure(port, WHOAMI, empty, key, callers, args.seconds)
                rows.append(
                    {
                        "callers": callers,
                        "search": search,
                        "whoami": whoami,
                        "raw_echo": echo,
                        "ratio": round(search["qps"] / echo["qps"], 3),
                    }
                )
        finally:
            server.stop(grace=None)
            market.close()
        uncached = Market.open(work / "market", profile=profile, api_key_ttl_s=0.0, index=args.index)
        server, port = create_server(uncached, settings=settings)
        server.start()
        try:
            no_key_cache = {
                "callers": 8,
                "search": _measure(port, SEARCH, request_file, key, 8, args.seconds),
                "whoami": _measure(port, WHOAMI, empty, key, 8, args.seconds),
            }
        finally:
            raw.stop()
            server.stop(grace=None)
            uncached.close()
    print(
        json.dumps(
            {
                "learnwares": args.learnwares,
                "index": args.index,
                "seconds": args.seconds,
                "blas_threads": args.blas_threads,
                "rows": rows,
                "no_key_cache": no_key_cache,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "grpcio": grpc.__version__,
                },
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        _client_main(sys.argv[2:])
    else:
        main()
