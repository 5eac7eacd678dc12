"""An approximate index: a faiss HNSW graph for the shortlist, the exact ranking on top of it
(`shortlist.ShortlistIndex`: exact scoring, the noisy specs scanned beside it, persistence).

A graph answers an exact query in well under a millisecond at 1M rows; a DP-noisy query sits
far off the rows' manifold, where the graph's distances are nearly flat, so its beam widens with
the query's noise (`beam_widening`): at 1M that costs tens of milliseconds, where `ivf`'s cost
does not depend on how far the query is from the rows (docs/performance.md).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from lmdock.common.spec import Spec
from lmdock.server.index.shortlist import ShortlistIndex

__all__ = ["HnswIndex", "beam_widening"]

#: Graph degree and build/search beam widths (recall: docs/performance.md); a larger
#: shortlist widens the search beam with it.
M, EF_CONSTRUCTION, EF_SEARCH = 32, 80, 64
#: Query noise energy (sigma^2 D) per extra search beam width, up to NOISE_BEAM_ROWS rows; past
#: them the widening grows with (rows / NOISE_BEAM_ROWS) ** NOISE_BEAM_GROWTH. A noisy query sits
#: far off the rows' manifold, where the graph's distances are nearly flat, so its beam must
#: cover a share of the rows more than a number of them. Measured on clustered specs with DP
#: queries (sigma 0.18, sigma^2 D = 12.4): at 100k, 4.0 per width gave recall@1 0.93 and 1.0 gave
#: 1.0 (@10 0.996); at 1M, 1.0 gave 0.78, 0.25 gave 0.98, 0.2 gave 0.99, 0.15 gave 1.0, and a
#: linear growth (0.1 per width) 1.0 at twice 0.15's latency (benchmarks/noisy_recall.py,
#: docs/performance.md). The growth 0.8 widens 1M's beam as 0.16 per width would.
NOISE_ENERGY_PER_BEAM = 1.0
NOISE_BEAM_ROWS = 100_000
NOISE_BEAM_GROWTH = 0.8


def beam_widening(sigma: float, dim: int, rows: int) -> int:
    """How many times EF_SEARCH a query of noise sigma searches in a graph of `rows` rows:
    1 + ceil(sigma^2 D / NOISE_ENERGY_PER_BEAM * max(1, rows / NOISE_BEAM_ROWS) ** NOISE_BEAM_GROWTH)."""
    energy = sigma**2 * dim * max(1.0, rows / NOISE_BEAM_ROWS) ** NOISE_BEAM_GROWTH
    return 1 + int(np.ceil(energy / NOISE_ENERGY_PER_BEAM))


class HnswIndex(ShortlistIndex):
    """HNSW shortlist + exact re-ranking; `open` loads or (re)builds the persisted index."""

    NAME = "hnsw"

    def _new_structure(self) -> Any:
        graph = faiss.IndexHNSWFlat(self.dim, M)
        graph.hnsw.efConstruction = EF_CONSTRUCTION
        return graph

    def _structure_header(self) -> dict[str, Any]:
        return {"m": M}

    def _search_parameters(self, query: Spec, size: int, live: int) -> Any:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss' stubs
        params.efSearch = max(EF_SEARCH, size) * beam_widening(query.privacy.sigma, self.dim, live)
        return params
