"""Search latency, memory and recall of each index backend beside the numpy floor, in one run.

Specs (D = 384, exact unless said): `clustered` -- noisy copies around n/100 centres of norm
0.7 (per-coordinate noise 0.02: within-cluster distances ~0.3, between clusters ~1), queries
are noisy copies (0.005) of random learnwares, exact or DP-noisy (sigma 0.18: epsilon = 1 over
50 records at the default profile); `uniform` -- random directions at norm 0.7 and random
queries (no target). The floor is a plain float32 scan: `matrix @ s`, argpartition, the 10 best
sorted. Recall is against the exact index (which equals a full float64 scan, bit for bit).
rss_mb is the resident memory the backend added to the process (the floor: its matrix).
Prints one JSON object:

    python benchmarks/search.py --sizes 10000,100000 [--queries 200] --json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import time
from collections.abc import Callable

import numpy as np
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import EXACT, Spec
from lmdock.server.index import IndexEntry, Listing, SpecIndex
from lmdock.server.index.backends import IndexSource
from lmdock.server.index.exact import ExactIndex

DIM = 384


def _hnsw() -> type:
    from lmdock.server.index.hnsw import HnswIndex  # faiss: the ann extra

    return HnswIndex


def _ivf() -> type:
    from lmdock.server.index.ivf import IvfIndex

    return IvfIndex


APPROXIMATE: dict[str, Callable[[], type]] = {"hnsw": _hnsw, "ivf": _ivf}
DP_SIGMA = 0.18


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def spec_rows(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "clustered":
        centres = rng.standard_normal((max(n // 100, 10), DIM), dtype=np.float32)
        centres *= 0.7 / np.linalg.norm(centres, axis=1, keepdims=True)
        rows = centres[rng.integers(0, len(centres), n)]
        rows += 0.02 * rng.standard_normal((n, DIM), dtype=np.float32)
        return rows
    rows = rng.standard_normal((n, DIM), dtype=np.float32)
    rows *= 0.7 / np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def query_specs(
    kind: str, rows: np.ndarray, sigma: float, count: int, rng: np.random.Generator
) -> list[Spec]:
    if kind == "clustered":
        base = rows[rng.integers(0, len(rows), count)] + 0.005 * rng.standard_normal((count, DIM))
    else:
        base = spec_rows("uniform", count, rng)
    privacy = dataclasses.replace(EXACT, sigma=sigma, epsilon=1.0, delta=1e-6) if sigma else EXACT
    noisy = base + sigma * rng.standard_normal((count, DIM))
    return [Spec(profile_id="bench", values=v.astype(np.float32), privacy=privacy) for v in noisy]


def _entries(rows: np.ndarray) -> list[IndexEntry]:
    return [
        IndexEntry(Listing(f"lw-{i}", f"lw-{i}", "bench"), rows[i], 0.0, f"{i:064x}")
        for i in range(len(rows))
    ]


def _ids(index: SpecIndex, query: Spec) -> list[str]:
    return [m.learnware_id for m in index.search(query, top_k=10).matches]


def _timed(search: Callable[[Spec], list[str]], queries: list[Spec]) -> tuple[list[list[str]], np.ndarray]:
    answers, times = [], []
    for query in queries:
        started = time.perf_counter()
        answers.append(search(query))
        times.append(time.perf_counter() - started)
    return answers, 1e3 * np.array(times)


def _row(
    backend: str, n: int, specs: str, sigma: float, ms: np.ndarray, **extra: object
) -> dict[str, object]:
    return {
        "backend": backend,
        "n": n,
        "specs": specs,
        "query_sigma": sigma,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        **extra,
    }


def _recall(found: list[list[str]], truth: list[list[str]]) -> dict[str, float]:
    return {
        "recall@1": round(float(np.mean([f[:1] == t[:1] for f, t in zip(found, truth, strict=True)])), 4),
        "recall@10": round(
            float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])), 4
        ),
    }


def _run(n: int, specs: str, count: int, backends: list[str]) -> list[dict[str, object]]:
    rng = np.random.default_rng(n)
    rows = spec_rows(specs, n, rng)
    sigmas = (0.0, DP_SIGMA) if specs == "clustered" else (0.0,)
    queries = {sigma: query_specs(specs, rows, sigma, count, rng) for sigma in sigmas}
    out: list[dict[str, object]] = []

    def floor(query: Spec) -> list[str]:
        key = rows @ query.values
        key *= -2.0
        key += norms
        best = np.argpartition(key, 10)[:10]
        return [f"lw-{i}" for i in best[np.argsort(key[best])]]

    norms = np.sum(rows * rows, axis=1)
    floors = {sigma: _timed(floor, qs) for sigma, qs in queries.items()}
    before = _rss_mb()
    started = time.perf_counter()
    exact = ExactIndex.from_entries(_entries(rows), expected=n)
    build_s, rss = time.perf_counter() - started, _rss_mb() - before
    truth: dict[float, list[list[str]]] = {}
    for sigma, qs in queries.items():
        truth[sigma], ms = _timed(lambda q: _ids(exact, q), qs)
        found, floor_ms = floors[sigma]
        floor_mb = round(rows.nbytes / 2**20, 1)
        out.append(_row("numpy", n, specs, sigma, floor_ms, **_recall(found, truth[sigma]), rss_mb=floor_mb))
        out.append(
            _row(
                "exact",
                n,
                specs,
                sigma,
                ms,
                **_recall(truth[sigma], truth[sigma]),
                rss_mb=round(rss, 1),
                build_s=round(build_s, 2),
            )
        )
    exact = ExactIndex()  # the rows go, before the next backend's memory is measured
    gc.collect()
    for backend in (b for b in backends if b in APPROXIMATE):
        index_class = APPROXIMATE[backend]()
        before = _rss_mb()
        started = time.perf_counter()
        # as a market's start builds it (an IVF trains its lists on a sample first)
        source = IndexSource(make_profile(), lambda: iter(_entries(rows)), lambda: iter([]), lambda: n)
        index = index_class.open(source, directory=None)
        build_s, rss = time.perf_counter() - started, _rss_mb() - before
        for sigma, qs in queries.items():
            found, ms = _timed(lambda q, index=index: _ids(index, q), qs)
            out.append(
                _row(
                    backend,
                    n,
                    specs,
                    sigma,
                    ms,
                    **_recall(found, truth[sigma]),
                    rss_mb=round(rss, 1),
                    build_s=round(build_s, 1),
                )
            )
        del index
        gc.collect()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--backends", default="exact,hnsw,ivf", help="exact always runs (it is the truth)")
    parser.add_argument("--specs", default="clustered,uniform")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output)")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    for n in (int(x) for x in args.sizes.split(",")):
        for specs in args.specs.split(","):
            rows += _run(n, specs, args.queries, args.backends.split(","))
    print(json.dumps({"machine": {"cpus": os.cpu_count()}, "dim": DIM, "top_k": 10, "rows": rows}))


if __name__ == "__main__":
    main()
