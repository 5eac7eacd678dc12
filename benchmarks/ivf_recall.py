"""Would an IVF shortlist meet issue 21's 1M target for DP-noisy queries? faiss alone, no market.

The HNSW index answers exact queries at 1M in under a millisecond, but a DP-noisy query (σ =
0.18: ε = 1 over 50 records) needs a beam that covers a share of the rows: recall@1 0.99 at
34-55 ms (docs/performance.md). An inverted file's cost is the share of lists it probes,
whatever the query's distance from the rows, so this measures recall and latency against the
share probed, before any market code is written for it. The specs are `benchmarks/search.py`'s
clustered ones (noisy copies around n/100 centres of norm 0.7), the queries noisy copies
(0.005) of random rows plus σ per coordinate; the truth is faiss' exact float32 L2 scan of the
same rows (for exact rows the smallest ||q - mu_l||^2 is the smallest debiased distance).

* `flat`: `IndexIVFFlat`, each list's rows in float32 (exact distances; what a shortlist reads
  back from);
* `sq8`: `IndexIVFScalarQuantizer` (8 bits a coordinate, 4x less memory to scan), its
  top 10·k re-ranked exactly (`IndexRefineFlat`).

The coarse quantizer is trained on `--train-per-list` rows a list (k-means, both cores); search
runs on one thread, one query at a time, as a market worker does. Prints one JSON object:

    python benchmarks/ivf_recall.py [--n 1000000] [--lists 16384] [--kinds flat,sq8]
        [--shares 0.005,0.01,0.02,0.05] [--sigmas 0,0.18] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import faiss
import numpy as np
from search import DIM, spec_rows


def build(
    kind: str, rows: np.ndarray, lists: int, per_list: int, rng: np.random.Generator
) -> tuple[object, object]:
    quantizer = faiss.IndexFlatL2(DIM)
    if kind == "sq8":
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, DIM, lists, faiss.ScalarQuantizer.QT_8bit)
    else:
        ivf = faiss.IndexIVFFlat(quantizer, DIM, lists)
    faiss.omp_set_num_threads(2)
    ivf.train(rows[rng.choice(len(rows), min(len(rows), per_list * lists), replace=False)])
    index = faiss.IndexRefineFlat(ivf) if kind == "sq8" else ivf  # a refine keeps float32 rows too
    index.add(rows)  # a refine adds to both
    faiss.omp_set_num_threads(1)
    if kind == "sq8":
        index.k_factor = 10
    return ivf, index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--lists", type=int, default=16384)
    parser.add_argument("--train-per-list", type=int, default=16)
    parser.add_argument("--kinds", default="flat,sq8")
    parser.add_argument("--shares", default="0.005,0.01,0.02,0.05")
    parser.add_argument("--sigmas", default="0,0.18")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = spec_rows("clustered", args.n, rng)
    exact = faiss.IndexFlatL2(DIM)
    exact.add(rows)
    sources = rows[rng.integers(0, args.n, args.queries)] + 0.005 * rng.standard_normal((args.queries, DIM))
    queries = {
        s: (sources + s * rng.standard_normal((args.queries, DIM))).astype(np.float32)
        for s in (float(x) for x in args.sigmas.split(","))
    }
    faiss.omp_set_num_threads(1)
    truth = {s: exact.search(q, args.top_k)[1] for s, q in queries.items()}
    out: dict[str, object] = {
        "n": args.n,
        "lists": args.lists,
        "dim": DIM,
        "queries": args.queries,
        "builds": {},
    }
    results = []
    for kind in args.kinds.split(","):
        started = time.perf_counter()
        ivf, index = build(kind, rows, args.lists, args.train_per_list, rng)
        out["builds"][kind] = round(time.perf_counter() - started, 1)  # type: ignore[index]
        for sigma, q in queries.items():
            for share in (float(x) for x in args.shares.split(",")):
                ivf.nprobe = max(1, round(share * args.lists))  # type: ignore[attr-defined]
                latencies, found = [], []
                for i in range(len(q)):
                    t0 = time.perf_counter()
                    _, ids = index.search(q[i : i + 1], args.top_k)  # type: ignore[attr-defined]
                    latencies.append(time.perf_counter() - t0)
                    found.append(ids[0])
                truth_s = truth[sigma]
                results.append(
                    {
                        "kind": kind,
                        "sigma": sigma,
                        "share": share,
                        "nprobe": ivf.nprobe,  # type: ignore[attr-defined]
                        "p50_ms": round(1000 * float(np.median(latencies)), 2),
                        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2),
                        "recall@1": round(
                            float(np.mean([f[0] == t[0] for f, t in zip(found, truth_s, strict=True)])), 4
                        ),
                        f"recall@{args.top_k}": round(
                            float(
                                np.mean(
                                    [
                                        len(set(f) & set(t)) / args.top_k
                                        for f, t in zip(found, truth_s, strict=True)
                                    ]
                                )
                            ),
                            4,
                        ),
                    }
                )
                print(json.dumps(results[-1]), flush=True, file=sys.stderr)
        del ivf, index
    scans = []
    for i in range(min(20, args.queries)):  # the floor: faiss' exact scan, one thread
        t0 = time.perf_counter()
        exact.search(queries[max(queries)][i : i + 1], args.top_k)
        scans.append(time.perf_counter() - t0)
    out["exact_scan_p50_ms"] = round(1000 * float(np.median(scans)), 2)
    out["rows"] = results
    out["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    out["faiss"] = faiss.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
