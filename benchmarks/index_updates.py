"""What N uploads cost the search index: re-stacking every spec on each add vs growing in place.

The old exact index rebuilt its whole matrix on every upload (O(N) per add, O(N^2) in all);
`ExactIndex` appends one row into arrays that double when full. Both run here, in one process,
on the same N learnwares (D-dimensional exact specs; tests/test_spec_index.py checks that the
two rank alike). Prints one JSON object:

    python benchmarks/index_updates.py [--uploads 2000] [--dim 384]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from lmdock.common.card import Card
from lmdock.common.market_types import LearnwareInfo
from lmdock.common.package import TaskInfo
from lmdock.common.spec import EXACT, Spec
from lmdock.server.index.exact import ExactIndex


def _rebuild_on_every_add(items: list[LearnwareInfo]) -> float:
    """The old `SpecIndex.add`: re-stack every spec (and sigma) into fresh arrays per upload."""
    started = time.perf_counter()
    held: list[LearnwareInfo] = []
    for lw in items:
        held = [*held, lw]
        np.stack([x.spec.values for x in held])
        np.array([x.spec.privacy.sigma for x in held], dtype=np.float64)
    return time.perf_counter() - started


def _add_incrementally(items: list[LearnwareInfo]) -> float:
    index = ExactIndex()
    started = time.perf_counter()
    for lw in items:
        index.add(lw)
    return time.perf_counter() - started


def _learnwares(n: int, dim: int) -> list[LearnwareInfo]:
    rng = np.random.default_rng(0)
    return [
        LearnwareInfo(
            card=Card(id=f"lw-{i}", name=f"lw-{i}", domain="bench", licence="-", publisher="-"),
            base_model="-",
            task=TaskInfo("generation"),
            spec=Spec(profile_id="p", values=rng.standard_normal(dim).astype(np.float32), privacy=EXACT),
            package_sha256="0" * 64,
            package_size=1,
        )
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    items = _learnwares(args.uploads, args.dim)
    rebuild_s = _rebuild_on_every_add(items)
    incremental_s = _add_incrementally(items)
    print(
        json.dumps(
            {
                "uploads": args.uploads,
                "dim": args.dim,
                "rebuild_s": round(rebuild_s, 4),
                "incremental_s": round(incremental_s, 4),
                "incremental_us_per_upload": round(1e6 * incremental_s / args.uploads, 2),
                "speedup": round(rebuild_s / incremental_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
