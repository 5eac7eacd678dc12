"""Exact search over the learnwares' kernel-mean specs.

Ranking: d_l = ||s - mu_l||^2 - (sigma^2 + sigma_l^2) D, the debiased squared distance between
the query spec s (noise sigma) and learnware l's spec mu_l (noise sigma_l, 0 when exact); see
`lmdock.common.spec`. Smaller is better.

Score (0..1): the kernel alignment of the two data sets,

    score_l = clip(2 <mu, mu_l> / (||mu||^2 + ||mu_l||^2), 0, 1) = clip(1 - d_l / (a + b), 0, 1)

with a = ||s||^2 - sigma^2 D and b = ||mu_l||^2 - sigma_l^2 D (both debiased). It is 1 when the
two kernel means coincide and falls to 0 as they become orthogonal, whatever the scale of the
features.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
from lmdock.common.records import LearnwareInfo, Match, SearchResult
from lmdock.common.spec import Spec, debiased_sq_distance

__all__ = ["SpecIndex"]


class SpecIndex:
    def __init__(self, learnwares: Iterable[LearnwareInfo] = ()) -> None:
        self._lock = threading.Lock()
        self._items: list[LearnwareInfo] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._sigmas = np.zeros(0)
        for lw in learnwares:
            self.add(lw)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, lw: LearnwareInfo) -> None:
        with self._lock:
            self._items.append(lw)
            self._matrix = np.stack([x.spec.values for x in self._items])
            self._sigmas = np.array([x.spec.privacy.sigma for x in self._items])

    def search(self, query: Spec, *, top_k: int) -> SearchResult:
        with self._lock:
            items, matrix, sigmas = self._items, self._matrix, self._sigmas
        if not items:
            return SearchResult(matches=())
        dist = debiased_sq_distance(query, matrix, sigmas)
        dim = matrix.shape[1]
        a = float(np.sum(query.values.astype(np.float64) ** 2)) - query.privacy.sigma**2 * dim
        b = np.sum(matrix.astype(np.float64) ** 2, axis=1) - sigmas**2 * dim
        denom = np.maximum(a + b, 1e-12)
        scores = np.clip(1.0 - dist / denom, 0.0, 1.0)
        order = np.argsort(dist, kind="stable")[:top_k]
        return SearchResult(
            matches=tuple(
                Match(
                    learnware_id=items[i].id,
                    name=items[i].name,
                    domain=items[i].domain,
                    distance=float(dist[i]),
                    score=float(scores[i]),
                )
                for i in order
            )
        )
