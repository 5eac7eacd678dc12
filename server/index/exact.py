"""Exact search over the learnwares' kernel-mean specs.

Distance: d_l = ||s - mu_l||^2 - (sigma^2 + sigma_l^2) D, the debiased squared distance between
the query spec s (noise sigma) and learnware l's spec mu_l (noise sigma_l, 0 when exact); see
`lmdock.common.spec`. Ranking: by d_l plus RANK_Z standard deviations of the noise that can
reorder it (`lmdock.common.ranking`), so a very noisy spec cannot win by luck. Smaller is better.

Score (0..1): the kernel alignment of the two data sets,

    score_l = clip(2 <mu, mu_l> / (||mu||^2 + ||mu_l||^2), 0, 1) = clip(1 - d_l / (a + b), 0, 1)

with a = ||s||^2 - sigma^2 D and b = ||mu_l||^2 - sigma_l^2 D (both debiased). It is 1 when the
two kernel means coincide and falls to 0 as they become orthogonal, whatever the scale of the
features.

Mixture (on request): non-negative weights summing to 1 over at most MIXTURE_COMPONENTS of
the MIXTURE_CANDIDATES nearest learnwares that best explain the query's kernel mean, and the
residual -- the debiased squared distance from the query to that mixture, in the units of
`distance` (see `lmdock.common.mixture`). The candidates are the first by the same bound.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from lmdock.common.market_types import LearnwareInfo, Match, MixtureComponent, SearchResult
from lmdock.common.mixture import explain_as_mixture
from lmdock.common.ranking import distances
from lmdock.common.spec import Spec

__all__ = ["ExactIndex"]

MIXTURE_CANDIDATES = 32
MIXTURE_COMPONENTS = 4


@dataclass(frozen=True)
class _Snapshot:
    """What one search reads: `items[i]` is row i of `matrix` and `sigmas`, for i < len(matrix).

    `items` may run longer (later adds append to it), but rows below len(matrix) never change
    while a snapshot holds them: adds write past them, removes build new arrays.
    """

    items: list[LearnwareInfo]
    matrix: np.ndarray
    sigmas: np.ndarray


class ExactIndex:
    """Every learnware scored on every search; rows kept in arrays that grow by doubling."""

    def __init__(self, learnwares: Iterable[LearnwareInfo] = ()) -> None:
        self._lock = threading.Lock()
        self._items: list[LearnwareInfo] = []
        self._rows = np.zeros((0, 0), np.float32)  # capacity >= len(self._items)
        self._row_sigmas = np.zeros(0, np.float64)
        self._snapshot = _Snapshot(self._items, self._rows, self._row_sigmas)
        for lw in learnwares:
            self.add(lw)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, lw: LearnwareInfo) -> None:
        with self._lock:
            n = len(self._items)
            if n == len(self._rows):  # full: copy into twice the room (amortised O(1) per add)
                rows = np.zeros((max(2 * n, 8), lw.spec.values.shape[0]), np.float32)
                sigmas = np.zeros(len(rows), np.float64)
                if n:
                    rows[:n], sigmas[:n] = self._rows, self._row_sigmas
                self._rows, self._row_sigmas = rows, sigmas
            self._rows[n] = lw.spec.values
            self._row_sigmas[n] = lw.spec.privacy.sigma
            self._items.append(lw)
            self._snapshot = _Snapshot(self._items, self._rows[: n + 1], self._row_sigmas[: n + 1])

    def remove(self, learnware_id: str) -> None:
        with self._lock:
            found = [i for i, x in enumerate(self._items) if x.card.id == learnware_id]
            if not found:
                return
            # New arrays, not a shift in place: a search may still be reading the old rows.
            # Later rows move up one, so ties keep their insertion order.
            n, i = len(self._items), found[0]
            self._items = [*self._items[:i], *self._items[i + 1 :]]
            self._rows = np.delete(self._rows[:n], i, axis=0)
            self._row_sigmas = np.delete(self._row_sigmas[:n], i)
            self._snapshot = _Snapshot(self._items, self._rows, self._row_sigmas)

    def search(self, query: Spec, *, top_k: int, mixture: bool = False) -> SearchResult:
        with self._lock:  # updates replace the snapshot whole; the search runs on the one it took
            snapshot = self._snapshot
        items, matrix, sigmas = snapshot.items, snapshot.matrix, snapshot.sigmas
        if not len(matrix):
            return SearchResult(matches=())
        estimates = distances(query, matrix, sigmas)
        dist = estimates.distance
        dim = matrix.shape[1]
        a = float(np.sum(query.values.astype(np.float64) ** 2)) - query.privacy.sigma**2 * dim
        b = np.sum(matrix.astype(np.float64) ** 2, axis=1) - sigmas**2 * dim
        denom = np.maximum(a + b, 1e-12)
        scores = np.clip(1.0 - dist / denom, 0.0, 1.0)
        ranked = np.argsort(estimates.bound, kind="stable")
        order = ranked[:top_k]
        components: tuple[MixtureComponent, ...] = ()
        residual = 0.0
        if mixture:
            near = ranked[:MIXTURE_CANDIDATES]
            found = explain_as_mixture(
                query.values,
                query.privacy.sigma,
                matrix[near],
                sigmas[near],
                max_components=MIXTURE_COMPONENTS,
            )
            components = tuple(
                MixtureComponent(learnware_id=items[int(near[i])].card.id, weight=w)
                for i, w in zip(found.indices, found.weights, strict=True)
            )
            residual = found.residual
        return SearchResult(
            mixture=components,
            mixture_residual=residual,
            matches=tuple(
                Match(
                    learnware_id=items[i].card.id,
                    name=items[i].card.name,
                    domain=items[i].card.domain,
                    distance=float(dist[i]),
                    score=float(scores[i]),
                    distance_sd=float(estimates.sd[i]),
                    rank_bound=float(estimates.bound[i]),
                )
                for i in order
            ),
        )
