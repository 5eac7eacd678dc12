"""Fuzz: the long run of tests/security/test_fuzz.py, with the same generators and market.

One market in this process (port 0; SQLite, or with `--db postgresql` a throwaway PostgreSQL
cluster as the tests start one; API keys per role; no rate limit), seeded as
`tests/security/fuzz_market.py` says, with the packaged MiniLM as its base model. In rounds
until `--inputs` inputs were tried, for every MarketService RPC (from the proto descriptor)
and each of anonymous, consumer, publisher and admin: random request bytes and well-formed
messages with drawn fields; broken Upload streams; mutated packages through the checker
(unpack + check) and through Upload. Health is checked after each batch (a market that stops
serving would be restarted and counted). Prints one JSON object: inputs tried, status codes
by RPC, the count of INTERNAL/UNKNOWN answers and untyped checker errors (with the first few
inputs that caused them), ERROR records and tracebacks logged, server restarts, what was left
behind (temp files, orphan blobs, new learnwares or keys), wall time, machine:

    python benchmarks/fuzz.py [--inputs 10000] [--seed 0] [--db sqlite|postgresql] [--open-demo]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

# the generators and the market live with the fuzz suite, in tests/security/
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from lmdock.common.embedder_files import DEFAULT_EMBEDDER, embedder_dir
from lmdock.common.profile_factory import make_profile

from tests.security.fuzz_inputs import (
    METHODS,
    mutated_packages,
    raw_requests,
    requests,
    upload_streams,
    whole_upload,
)
from tests.security.fuzz_market import BUGS, ROLES, FuzzMarket, LogWatch, fuzz_market

#: Examples per batch, relative to one RPC's batch: packages are slower and richer.
WEIGHTS = {"raw": 1, "fields": 2, "stream": 2, "checker": 4, "package-upload": 1}


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def databases(kind: str, stack: ExitStack) -> Iterator[str]:
    """Database URLs for the markets: "" (SQLite in the market's folder), or new databases in a
    throwaway PostgreSQL cluster (tests/pg.py), stopped with `stack`."""
    if kind == "sqlite":
        while True:
            yield ""
    from tests.pg import PgCluster

    cluster = PgCluster()
    cluster.start()
    stack.callback(cluster.stop)
    while True:
        yield cluster.url(cluster.create_database())


def is_bug(status: str) -> bool:
    return status in BUGS or status.startswith("UNTYPED")


class Run:
    def __init__(self, folder: Path, db_urls: Iterator[str], *, open_demo: bool) -> None:
        self.folder = folder
        self.open_demo = open_demo
        self.uploader = "anonymous" if open_demo else "publisher"  # who uploads mutated packages
        self.db_urls = db_urls  # a fresh database for each market (a restart too)
        self.stack = ExitStack()
        self.market = self._open()
        self.inputs: Counter[str] = Counter()
        self.checker: Counter[str] = Counter()
        self.findings: list[dict[str, str]] = []
        self.restarts = 0
        self.earlier: Counter[tuple[str, str]] = Counter()  # statuses of markets restarted since

    def _open(self) -> FuzzMarket:
        n = len(list(self.folder.iterdir()))
        return self.stack.enter_context(
            fuzz_market(
                self.folder / f"market-{n}",
                make_profile(),
                base_model=DEFAULT_EMBEDDER,
                base_folder=embedder_dir(DEFAULT_EMBEDDER),
                db_url=next(self.db_urls),
                open_demo=self.open_demo,
            )
        )

    def batch(
        self, kind: str, strategy: st.SearchStrategy[Any], target: Callable[[Any], str], *, n: int, at: int
    ) -> None:
        """Run `n` drawn inputs through `target`, recording its statuses and any bug."""

        @settings(
            max_examples=n,
            database=None,
            deadline=None,
            derandomize=False,
            suppress_health_check=list(HealthCheck),
        )
        @seed(at)
        @given(strategy)
        def run(value: Any) -> None:
            self.inputs[kind] += 1
            status = target(value)
            if is_bug(status) and len(self.findings) < 20:
                self.findings.append({"kind": kind, "status": status, "input": repr(value)[:300]})

        run()
        if not self.market.healthy():
            self.restarts += 1
            self.earlier.update(self.market.statuses)
            self.market = self._open()

    def round(self, number: int, per_rpc: int, workdir: Path) -> None:
        m = self.market
        for method in sorted(METHODS):
            for role in ROLES:
                known = m.known(method, role)
                call = lambda p, method=method, role=role: self.market.call(method, role, p)  # noqa: E731
                self.batch("raw", raw_requests(method, known), call, n=per_rpc * WEIGHTS["raw"], at=number)
                self.batch("fields", requests(method, known), call, n=per_rpc * WEIGHTS["fields"], at=number)
        for role in ROLES:
            stream = lambda s, role=role: self.market.call("Upload", role, s)  # noqa: E731
            self.batch("stream", upload_streams(m.package), stream, n=per_rpc * WEIGHTS["stream"], at=number)

        def check(archive: bytes) -> str:
            try:
                status = self.market.run_checker(archive, workdir)
            except Exception as exc:  # an untyped error is a finding, reported, not the run's end
                status = f"UNTYPED {type(exc).__name__}"
            self.checker[status] += 1
            return status

        packages = mutated_packages(m.parts)
        self.batch("checker", packages, check, n=per_rpc * WEIGHTS["checker"] * len(ROLES), at=number)
        self.batch(
            "package-upload",
            packages,
            self.upload,
            n=per_rpc * WEIGHTS["package-upload"] * len(ROLES),
            at=number,
        )

    def upload(self, archive: bytes) -> str:
        return self.market.call("Upload", self.uploader, whole_upload(archive))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs to try at least")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-rpc", type=int, default=10, help="examples per RPC, role and kind in a round")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--open-demo", action="store_true", help="anonymous callers may publish (an embedded, local market)"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    watch = LogWatch()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp, watch.watching():
        root = Path(tmp)
        (root / "markets").mkdir()
        (root / "checker").mkdir()
        run = Run(root / "markets", databases(args.db, stack), open_demo=args.open_demo)
        statuses: Counter[tuple[str, str]] = Counter()
        try:
            number = args.seed
            while sum(run.inputs.values()) < args.inputs:
                run.round(number, args.per_rpc, root / "checker")
                number += 1
            statuses.update(run.earlier + run.market.statuses)
            left = run.market.leftovers()
            left["checker_files"] = len(list((root / "checker").iterdir()))
        finally:
            run.stack.close()
    by_rpc: dict[str, dict[str, int]] = {}
    for (method, status), count in sorted(statuses.items()):
        by_rpc.setdefault(method, {})[status] = count
    bugs = sum(c for (_, s), c in statuses.items() if is_bug(s)) + sum(
        c for s, c in run.checker.items() if is_bug(s)
    )
    print(
        json.dumps(
            {
                "inputs": sum(run.inputs.values()),
                "inputs_by_kind": dict(run.inputs),
                "status_by_rpc": by_rpc,
                "package_checker": dict(run.checker),
                "accepted_uploads": run.market.accepted_uploads,
                "internal_unknown_or_untyped": bugs,
                "findings": run.findings,
                "log_errors": len(watch.records),
                "tracebacks": sum(1 for r in watch.records if r.exc_info),
                "log_lines": watch.lines()[:10],
                "server_restarts": run.restarts,
                "left_behind": left,
                "wall_s": round(time.perf_counter() - started, 1),
                "database": args.db,
                "access": "open demo" if args.open_demo else "API keys",
                "machine": f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
                f"grpcio {grpc.__version__}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
