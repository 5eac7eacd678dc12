"""Soak: honest callers beside slow-stream attackers, on the real market (grpc.aio).

One market in this process, as `lmdock-market serve` builds it (`create_server`: SQLite, the
default profile, the default stream limits; API keys required; no per-caller rate limit, so
that the honest clients' own pace is not what is measured), with L learnwares. For T seconds:

- N honest clients, each with an admin key of its own, loop over a mix: Search (a random
  exact spec), ListLearnwares, Download of a random learnware (whole, verified), and Upload of
  a fresh package followed by its Unpublish;
- A attackers, each with a publisher key of its own, hold as many streams as the per-caller
  cap allows: half Uploads that send a header and then nothing, half Downloads that never
  read; when the market closes one (its idle limit), the attacker opens another;
- a prober calls Health.Check every 50 ms with a 1 s deadline.

Prints one JSON object: honest calls by kind (count, failures, p50/p99 ms), Health p50/p99/max
and failures, how the attackers' streams ended, and the process RSS before and after:

    python benchmarks/soak.py [--clients 4] [--attackers 4] [--seconds 30] [--idle 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lmdock.client.connection import MarketClient
from lmdock.common.errors import LmdockError
from lmdock.common.profile_factory import make_profile
from lmdock.common.signing import generate_key, public_key_to_b64
from lmdock.common.spec import exact_spec
from lmdock.server.app import ServerSettings, create_server
from lmdock.server.identity import Role
from lmdock.server.limits import RateLimits, StreamLimits
from lmdock.server.market import Market
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc
from packages import make_packages


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


class Honest:
    """One honest client's loop; records (kind, ms, ok) per call."""

    def __init__(
        self, address: str, key: str, ids: list[str], fresh: list[Path], work: Path, seed: int
    ) -> None:
        self.address, self.key, self.ids, self.fresh, self.work = address, key, ids, fresh, work
        self.rng = random.Random(seed)
        self.calls: list[tuple[str, float, bool]] = []
        self.errors: Counter[str] = Counter()

    def timed(self, kind: str, call, *args) -> None:
        started = time.perf_counter()
        ok = True
        try:
            call(*args)
        except LmdockError as exc:
            ok = False
            self.errors[f"{kind}: {exc.status}"] += 1
        self.calls.append((kind, (time.perf_counter() - started) * 1000, ok))

    def run(self, until: float, profile) -> None:
        with MarketClient(self.address, api_key=self.key) as client:
            while time.monotonic() < until:
                seed = self.rng.getrandbits(32)
                rows = np.random.default_rng(seed).standard_normal((60, profile.feature_dim))
                rows /= np.linalg.norm(rows, axis=1, keepdims=True)
                self.timed("search", client.search, exact_spec(rows, profile))
                self.timed("list", client.list)
                target = self.rng.choice(self.ids)
                self.timed("download", client.download, target, self.work / f"{target}.tar")
                if self.fresh:
                    package = self.fresh.pop()
                    self.timed("upload", client.upload, package)
                    self.timed("unpublish", client.unpublish, package.stem)


class Attacker:
    """Keeps `streams` streams open and idle: stalled Uploads and unread Downloads."""

    def __init__(self, address: str, key: str, streams: int, target: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.MarketServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.streams, self.target = streams, target
        self.ended: Counter[str] = Counter()
        self.opened = 0
        self.stop = threading.Event()

    def stalled_upload(self) -> None:
        def requests() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(header=pb.UploadHeader(sha256="a" * 64, size=1_000_000))
            self.stop.wait()

        try:
            self.stub.Upload(requests(), metadata=self.metadata, timeout=600)
            self.ended["upload: OK"] += 1
        except grpc.RpcError as exc:
            self.ended[f"upload: {exc.code().name}"] += 1

    def unread_download(self) -> None:
        call = self.stub.Download(
            pb.DownloadRequest(learnware_id=self.target), metadata=self.metadata, timeout=600
        )
        try:
            next(call)  # the header; then read nothing more until the market gives up
            self.stop.wait(600)
            call.cancel()
            self.ended["download: left"] += 1
        except grpc.RpcError as exc:
            self.ended[f"download: {exc.code().name}"] += 1

    def hold(self, kind: str) -> None:
        while not self.stop.is_set():
            self.opened += 1
            (self.stalled_upload if kind == "upload" else self.unread_download)()

    def threads(self) -> list[threading.Thread]:
        kinds = ["upload", "download"] * self.streams
        return [threading.Thread(target=self.hold, args=(k,), daemon=True) for k in kinds[: self.streams]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--learnwares", type=int, default=8)
    parser.add_argument("--idle", type=float, default=5.0, help="the market's stream idle limit (s)")
    args = parser.parse_args()

    profile = make_profile()
    limits = StreamLimits(idle_seconds=args.idle)
    settings = ServerSettings(rate_limits=RateLimits(calls_per_second=0), stream_limits=limits)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        signing = generate_key()
        rounds = int(args.seconds) + 1  # more fresh packages than a client can upload
        packages = make_packages(work / "pkgs", profile, args.learnwares + args.clients * rounds, key=signing)
        market = Market.open(work / "market", profile=profile)
        market.signing_keys.register("acme", public_key_to_b64(signing.public_key()), registered_by="soak")
        admins = [market.api_keys.create(f"ops-{i}", Role.ADMIN)[1] for i in range(args.clients)]
        mallory = [market.api_keys.create(f"mallory-{i}", Role.PUBLISHER)[1] for i in range(args.attackers)]
        server, port = create_server(market, settings=settings)
        server.start()
        address = f"127.0.0.1:{port}"
        try:
            with MarketClient(address, api_key=admins[0]) as client:
                ids = [client.upload(p).card.id for p in packages[: args.learnwares]]
            fresh = packages[args.learnwares :]
            health: list[float] = []
            health_failed: Counter[str] = Counter()
            rss_before = rss_mib()

            attackers = [Attacker(address, k, limits.per_caller, ids[0]) for k in mallory]
            attack_threads = [t for a in attackers for t in a.threads()]
            for t in attack_threads:
                t.start()
            time.sleep(1.0)  # every attacker holds its streams before honest work starts
            until = time.monotonic() + args.seconds

            def probe() -> None:
                with grpc.insecure_channel(address) as channel:
                    stub = health_pb2_grpc.HealthStub(channel)
                    while time.monotonic() < until:
                        started = time.perf_counter()
                        try:
                            stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                            health.append((time.perf_counter() - started) * 1000)
                        except grpc.RpcError as exc:
                            health_failed[exc.code().name] += 1
                        time.sleep(0.05)

            share = len(fresh) // max(1, args.clients)
            honest = [
                Honest(address, admins[i], ids, fresh[i * share : (i + 1) * share], work / f"c{i}", seed=i)
                for i in range(args.clients)
            ]
            for h in honest:
                h.work.mkdir()
            workers = [threading.Thread(target=h.run, args=(until, profile)) for h in honest]
            workers.append(threading.Thread(target=probe))
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            rss_after = rss_mib()
            for a in attackers:
                a.stop.set()
            for t in attack_threads:
                t.join(timeout=5)
        finally:
            server.stop(grace=None)
            market.close()

    by_kind: dict[str, list[float]] = defaultdict(list)
    failed: Counter[str] = Counter()
    for h in honest:
        for kind, ms, ok in h.calls:
            by_kind[kind].append(ms)
            failed[kind] += not ok
    ended: Counter[str] = Counter()
    for a in attackers:
        ended.update(a.ended)
    print(
        json.dumps(
            {
                "benchmark": "soak",
                "clients": args.clients,
                "attackers": args.attackers,
                "attacker_streams_held": args.attackers * limits.per_caller,
                "seconds": args.seconds,
                "stream_idle_limit_s": args.idle,
                "honest": {
                    kind: {
                        "calls": len(ms),
                        "failed": failed[kind],
                        "p50_ms": percentile(ms, 0.5),
                        "p99_ms": percentile(ms, 0.99),
                    }
                    for kind, ms in sorted(by_kind.items())
                },
                "honest_failed": sum(failed.values()),
                "honest_errors": dict(sum((h.errors for h in honest), Counter())),
                "health": {
                    "checks": len(health) + sum(health_failed.values()),
                    "failed": dict(health_failed),
                    "p50_ms": round(statistics.median(health), 2) if health else None,
                    "p99_ms": percentile(health, 0.99),
                    "max_ms": round(max(health), 2) if health else None,
                },
                "attacker_streams_opened": sum(a.opened for a in attackers),
                "attacker_streams_ended": dict(ended),
                "rss_mib": {"before": rss_before, "after": rss_after},
                "machine": f"{os.cpu_count()} cores",
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
