"""An approximate index: a faiss inverted file (IVF) for the shortlist, the exact ranking on top
of it (`shortlist.ShortlistIndex`: exact scoring, the noisy specs scanned beside it, persistence).

k-means splits the rows into lists of about ROWS_PER_LIST; a query scans the lists whose
centroids are nearest to it. What that costs is the share of lists scanned, whatever the
query's distance from the rows, which is why it suits DP-noisy queries: the HNSW graph's beam
must widen with a query's noise until it covers a share of the rows, tens of milliseconds at
1M, where this scans about 2% of the lists for recall@1 0.99 (benchmarks/ivf_recall.py,
docs/performance.md). The share grows with the query's noise energy sigma^2 D (`probes`).

The lists are trained once, on a sample of the rows there are when the index is first built
(`open`) or first given rows; later rows join the nearest list. A start whose catalogue has
grown REGROW times past the rows the lists were trained on rebuilds them.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np
from lmdock.common.spec import Spec
from lmdock.server.index.backends import IndexSource
from lmdock.server.index.shortlist import ShortlistIndex

__all__ = ["IvfIndex", "lists_for", "probes"]

#: Rows per list at training, the most lists, and k-means' sample per list: at 1M, 15,625
#: lists of 64 rows trained on 250k rows. Lists about the size of the catalogue's natural
#: clusters give a noisy query's right cluster the clearest lead (at 1M, 4,096 lists needed
#: 12.5% of them for recall@1 0.955 where 16,384 lists need 2% for 0.995).
ROWS_PER_LIST, MAX_LISTS, TRAIN_PER_LIST = 64, 16_384, 16
#: Share of the lists a query scans: MIN_SHARE (at least MIN_PROBES lists) plus SHARE_PER_NOISE
#: per unit of sigma^2 D. Measured at 1M on clustered specs (sigma 0.18, sigma^2 D = 12.4): 0.5%
#: gave recall@1 1.0 for exact queries; a noisy query needed 2% for 0.995 (1% gave 0.98).
MIN_SHARE, MIN_PROBES, SHARE_PER_NOISE = 0.005, 8, 0.0015
#: A start retrains the lists when the live rows are this many times those they were trained on.
REGROW = 4
_SAMPLE_SEED = 0


def lists_for(rows: int) -> int:
    return max(1, min(MAX_LISTS, rows // ROWS_PER_LIST))


def probes(sigma: float, dim: int, lists: int) -> int:
    """How many of `lists` a query of noise sigma scans: MIN_SHARE + SHARE_PER_NOISE * sigma^2 D of
    them, at least MIN_PROBES."""
    share = MIN_SHARE + SHARE_PER_NOISE * sigma**2 * dim
    return min(lists, max(MIN_PROBES, math.ceil(share * lists)))


class IvfIndex(ShortlistIndex):
    """IVF shortlist + exact re-ranking; `open` loads or (re)builds the persisted index."""

    NAME = "ivf"

    def __init__(self, dim: int, **kwargs: Any) -> None:
        super().__init__(dim, **kwargs)
        self._trained_rows = 0

    def _new_structure(self) -> Any:
        return faiss.index_factory(self.dim, "IVF1,Flat")  # untrained: the first rows train one

    def _structure_header(self) -> dict[str, Any]:
        return {"rows_per_list": ROWS_PER_LIST, "max_lists": MAX_LISTS}

    def _structure_meta(self) -> dict[str, Any]:
        return {"trained_rows": self._trained_rows}

    def _stale(self, meta: dict[str, Any], live: int) -> str:
        trained = int(meta.get("trained_rows", 0))
        if live > REGROW * max(trained, ROWS_PER_LIST):
            return f"its lists were trained on {trained} rows and it holds {live}"
        return ""

    def _loaded(self, meta: dict[str, Any]) -> None:
        self._trained_rows = int(meta.get("trained_rows", 0))
        self._structure.make_direct_map()  # not persisted: shortlist rows are read back through it

    def _build(self, source: IndexSource) -> None:
        """Train on a sample of the catalogue's exact rows, then add them all: two passes, so
        neither the catalogue nor the sample is held twice."""
        capacity = lists_for(source.count()) * TRAIN_PER_LIST
        sample = np.zeros((capacity, self.dim), np.float32)
        rng = np.random.default_rng(_SAMPLE_SEED)
        seen = 0
        for entry in source.entries():
            if entry.sigma != 0:
                continue
            slot = seen if seen < capacity else int(rng.integers(0, seen + 1))  # a reservoir
            if slot < capacity:
                sample[slot] = entry.values
            seen += 1
        if seen:
            self._train(sample[: min(seen, capacity)], seen)
        self.extend(source.entries())

    def _add_rows(self, rows: np.ndarray) -> None:
        if not self._structure.is_trained:
            self._train(rows, len(rows))
        self._structure.add(rows)

    def _train(self, sample: np.ndarray, rows: int) -> None:
        """New lists for `rows` rows, trained on `sample` (some of them)."""
        lists = lists_for(rows)
        ivf: Any = faiss.index_factory(self.dim, f"IVF{lists},Flat")  # an IndexIVFFlat
        ivf.cp.seed = _SAMPLE_SEED
        ivf.cp.min_points_per_centroid = 1  # the sample is sized on purpose (TRAIN_PER_LIST)
        ivf.train(sample[: lists * TRAIN_PER_LIST])
        ivf.make_direct_map()
        self._structure, self._trained_rows = ivf, rows

    def _search_parameters(self, query: Spec, size: int, live: int) -> Any:
        lists = self._structure.nlist
        params = faiss.SearchParametersIVF()
        # a longer shortlist needs lists enough to hold it: twice their average share of it
        held = math.ceil(2 * size * lists / max(live, 1))
        params.nprobe = min(lists, max(probes(query.privacy.sigma, self.dim, lists), held))
        return params
