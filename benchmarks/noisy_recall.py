"""Recall and latency of the HNSW index for DP-noisy queries, per beam widening, on a kept catalogue.

The catalogue and persisted index are those `benchmarks/startup.py --keep DIR` leaves in
DIR/<n> (clustered exact specs; building the 1M graph takes 6-13 minutes, so it is built once
and reused). Queries are noisy copies (0.005) of random learnwares plus DP noise of sigma
(0.18: epsilon = 1 over 50 records at the default profile), as in benchmarks/search.py; the
truth is the exact index over the same catalogue. For each NOISE_ENERGY_PER_BEAM (one more
beam width per that much sigma^2 D, scaled past NOISE_BEAM_ROWS rows by a power of the rows:
`hnsw.beam_widening`) and each growth it reports recall@1, recall@10 and the latency, beside
the exact index's latency in the same run.
Prints one JSON object:

    python benchmarks/noisy_recall.py --data-dir DIR/1000000 [--per-beam 1,0.5] [--growth 0,0.75,1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
from lmdock.common.spec import EXACT, Spec
from lmdock.server.config import load_or_create_profile
from lmdock.server.index import SpecIndex, hnsw
from lmdock.server.index.exact import ExactIndex
from lmdock.server.market import Market


def _answers(index: SpecIndex, queries: list[Spec]) -> tuple[list[list[str]], list[float]]:
    found, ms = [], []
    for query in queries:
        started = time.perf_counter()
        found.append([m.learnware_id for m in index.search(query, top_k=10).matches])
        ms.append(1e3 * (time.perf_counter() - started))
    return found, ms


def _latency(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--per-beam", default=str(hnsw.NOISE_ENERGY_PER_BEAM))
    parser.add_argument(
        "--beam-rows", type=int, default=hnsw.NOISE_BEAM_ROWS, help="rows before the beam scales"
    )
    parser.add_argument("--growth", default=str(hnsw.NOISE_BEAM_GROWTH), help="the beam's growth past them")
    parser.add_argument("--sigma", type=float, default=0.18)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    profile = load_or_create_profile(args.data_dir)
    market = Market.open(args.data_dir, profile=profile, index="hnsw")
    try:
        graph = market.index.of(profile.profile_id)
        assert isinstance(graph, hnsw.HnswIndex)
        entries = market.catalogue.iter_index_entries(profile_ids=profile.ids, max_sigma=profile.max_sigma)
        exact = ExactIndex.from_entries(entries, expected=len(graph))
        _, vectors, _ = exact.live()
        rng = np.random.default_rng(21)
        privacy = dataclasses.replace(EXACT, sigma=args.sigma, epsilon=1.0, delta=1e-6)
        noise = 0.005 * rng.standard_normal((args.queries, graph.dim))
        noise += args.sigma * rng.standard_normal((args.queries, graph.dim))
        picked = vectors[rng.integers(0, len(vectors), args.queries)] + noise
        queries = [
            Spec(profile_id=profile.profile_id, values=v.astype(np.float32), privacy=privacy) for v in picked
        ]
        truth, exact_ms = _answers(exact, queries)
        out: list[dict[str, object]] = [{"backend": "exact", **_latency(exact_ms)}]
        settings = [(float(p), float(g)) for p in args.per_beam.split(",") for g in args.growth.split(",")]
        for per_beam, growth in settings:
            hnsw.NOISE_ENERGY_PER_BEAM, hnsw.NOISE_BEAM_ROWS, hnsw.NOISE_BEAM_GROWTH = (
                per_beam,
                args.beam_rows,
                growth,
            )
            found, ms = _answers(graph, queries)
            out.append(
                {
                    "backend": "hnsw",
                    "per_beam": per_beam,
                    "beam_rows": args.beam_rows,
                    "growth": growth,
                    "widen": hnsw.beam_widening(args.sigma, graph.dim, len(graph)),
                    **_latency(ms),
                    "recall@1": float(np.mean([f[:1] == t[:1] for f, t in zip(found, truth, strict=True)])),
                    "recall@10": round(
                        float(
                            np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
                        ),
                        4,
                    ),
                }
            )
    finally:
        market.close()
    print(
        json.dumps(
            {
                "n": len(graph),
                "sigma": args.sigma,
                "queries": args.queries,
                "cpus": os.cpu_count(),
                "rows": out,
            }
        )
    )


if __name__ == "__main__":
    main()
