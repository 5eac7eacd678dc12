"""The exact answer over a set of candidate rows: what every backend returns, shortlist or not.

Distance, uncertainty and bound come from `lmdock.common.ranking.distances` (float64, per row,
so a row scores the same whichever other rows it is scored beside); matches are sorted by the
bound, ties by each row's position in the order of adding. Score (0..1): the kernel alignment

    score_l = clip(2 <mu, mu_l> / (||mu||^2 + ||mu_l||^2), 0, 1) = clip(1 - d_l / (a + b), 0, 1)

with a = ||s||^2 - sigma^2 D and b = ||mu_l||^2 - sigma_l^2 D (both debiased). Confidence: the
chance each match is the nearest of those returned (`lmdock.common.ranking.confidences`).

Mixture (on request): non-negative weights summing to 1 over at most MIXTURE_COMPONENTS of
the MIXTURE_CANDIDATES first learnwares by the bound that best explain the query's kernel
mean, and the residual (see `lmdock.common.mixture`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from lmdock.common.market_types import Match, MixtureComponent, SearchResult
from lmdock.common.mixture import explain_as_mixture
from lmdock.common.ranking import Distances, confidences, distances
from lmdock.common.spec import Spec
from lmdock.server.index import Listing

__all__ = ["MIXTURE_CANDIDATES", "MIXTURE_COMPONENTS", "Candidates", "rows_needed"]

MIXTURE_CANDIDATES = 32
MIXTURE_COMPONENTS = 4


def rows_needed(top_k: int, mixture: bool) -> int:
    """How many of the first rows by the bound a search's answer depends on."""
    return max(top_k, MIXTURE_CANDIDATES) if mixture else top_k


@dataclass(frozen=True)
class Candidates:
    """Rows scored exactly, sorted by (bound, position of adding)."""

    rows: np.ndarray  # float32 (k, D)
    sigmas: np.ndarray  # float64 (k,)
    sq_norms: np.ndarray  # float64 (k,): ||mu_l||^2, summed in float64 as `distances` does
    listings: Sequence[Listing]
    estimates: Distances
    order: np.ndarray  # int64: each row's position in the order of adding (breaks ties)

    @classmethod
    def score(
        cls,
        query: Spec,
        rows: np.ndarray,
        sigmas: np.ndarray,
        sq_norms: np.ndarray,
        listings: Sequence[Listing],
        positions: np.ndarray,
    ) -> Candidates:
        return cls(rows, sigmas, sq_norms, listings, distances(query, rows, sigmas), positions).sorted()

    def sorted(self) -> Candidates:
        est = self.estimates
        order = np.lexsort((self.order, est.bound))
        return Candidates(
            rows=self.rows[order],
            sigmas=self.sigmas[order],
            sq_norms=self.sq_norms[order],
            listings=[self.listings[int(i)] for i in order],
            estimates=Distances(distance=est.distance[order], sd=est.sd[order], bound=est.bound[order]),
            order=self.order[order],
        )

    def merged(self, other: Candidates) -> Candidates:
        """Both sets as one, sorted (their `order` must count in one order of adding)."""
        a, b = self.estimates, other.estimates
        return Candidates(
            rows=np.concatenate([self.rows, other.rows]),
            sigmas=np.concatenate([self.sigmas, other.sigmas]),
            sq_norms=np.concatenate([self.sq_norms, other.sq_norms]),
            listings=[*self.listings, *other.listings],
            estimates=Distances(
                distance=np.concatenate([a.distance, b.distance]),
                sd=np.concatenate([a.sd, b.sd]),
                bound=np.concatenate([a.bound, b.bound]),
            ),
            order=np.concatenate([self.order, other.order]),
        ).sorted()

    def result(self, query: Spec, *, top_k: int, mixture: bool) -> SearchResult:
        """The answer, when these are the first rows by the bound (`rows_needed` of them at least)."""
        est = self.estimates
        dim = query.values.shape[0]
        a = float(np.sum(query.values.astype(np.float64) ** 2)) - query.privacy.sigma**2 * dim
        components: tuple[MixtureComponent, ...] = ()
        residual = 0.0
        if mixture and len(self.rows):
            near = slice(0, MIXTURE_CANDIDATES)
            found = explain_as_mixture(
                query.values,
                query.privacy.sigma,
                self.rows[near],
                self.sigmas[near],
                max_components=MIXTURE_COMPONENTS,
            )
            components = tuple(
                MixtureComponent(learnware_id=self.listings[i].learnware_id, weight=w)
                for i, w in zip(found.indices, found.weights, strict=True)
            )
            residual = found.residual
        shown = min(top_k, len(self.rows))
        distance = est.distance[:shown]
        confidence = confidences(distance, self.rows[:shown], query.privacy.sigma, self.sigmas[:shown])
        # the shown rows' columns at once (elementwise, so each value is what a loop over
        # scalars computes) and plain floats out of them: numpy's per-scalar calls were most of
        # a top-5 answer's cost
        b = self.sq_norms[:shown] - self.sigmas[:shown] ** 2 * dim
        score = np.clip(1.0 - distance / np.maximum(a + b, 1e-12), 0.0, 1.0)
        columns = (distance, score, est.sd[:shown], est.bound[:shown], confidence)
        matches = tuple(
            Match(listing.learnware_id, listing.name, listing.domain, d, s, sd, bound, c)
            for listing, d, s, sd, bound, c in zip(
                self.listings[:shown], *(column.tolist() for column in columns), strict=True
            )
        )
        return SearchResult(mixture=components, mixture_residual=residual, matches=matches)
