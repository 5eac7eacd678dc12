"""How sure each search distance is, and the bound the market ranks by.

The query s = mu + z and learnware l's spec m_l = mu_l + z_l carry independent Gaussian noise,
z ~ N(0, sigma^2 I_D) and z_l ~ N(0, sigma_l^2 I_D) (sigma_l = 0 for an exact spec). With
Delta = mu - mu_l and tau^2 = sigma^2 + sigma_l^2, the debiased distance (`spec.debiased_sq_distance`)

    d_l = ||s - m_l||^2 - tau^2 D
        = ||Delta||^2 + (||z||^2 - sigma^2 D) + 2 Delta.(z - z_l) - 2 z.z_l + ||z_l||^2 - sigma_l^2 D

is unbiased, and (the terms are uncorrelated: every cross moment is odd in z or z_l)

    Var d_l = 4 tau^2 ||Delta||^2 + 2 D tau^4.

The term ||z||^2 - sigma^2 D is the same for every learnware of one search: it shifts all
distances alike and never changes their order. What can reorder them is the rest, with

    Var_rank d_l = Var d_l - 2 D sigma^4 = 4 tau^2 ||Delta||^2 + 2 D sigma_l^2 (2 sigma^2 + sigma_l^2).

Both use the plug-in ||Delta||^2 ~ max(d_l, 0). The market sorts by the upper bound

    bound_l = d_l + RANK_Z * sqrt(Var_rank d_l),

so a learnware whose spec is very noisy cannot come first by luck: with pure noise against it,
its bound beats a fixed one with probability about Phi(-RANK_Z) (2.3 %), against about half of
the time for the point distance. For exact learnwares the bound grows with d_l, so their order
is the point distances' order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from lmdock.common.spec import Spec, debiased_sq_distance

__all__ = ["RANK_Z", "Distances", "distances", "rank_bound"]

#: Standard deviations added to a distance before ranking (one-sided 97.7 %).
RANK_Z = 2.0

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Distances:
    """Per candidate: the debiased distance, its standard deviation, and the ranking bound."""

    distance: FloatArray
    sd: FloatArray
    bound: FloatArray


def distances(
    query: Spec,
    candidates: npt.NDArray[np.float32],
    candidate_sigmas: npt.NDArray[np.float64],
    *,
    z: float = RANK_Z,
) -> Distances:
    """`Distances` of the query to each row of `candidates` (noise `candidate_sigmas`)."""
    d = debiased_sq_distance(query, candidates, candidate_sigmas)
    dim = query.values.shape[0]
    tau2 = query.privacy.sigma**2 + np.asarray(candidate_sigmas, dtype=np.float64) ** 2
    sd: FloatArray = np.sqrt(4.0 * tau2 * np.maximum(d, 0.0) + 2.0 * dim * tau2**2)
    bound = rank_bound(d, query.privacy.sigma, candidate_sigmas, dim, z=z)
    return Distances(distance=d, sd=sd, bound=bound)


def rank_bound(
    d: FloatArray, query_sigma: float, candidate_sigmas: npt.ArrayLike, dim: int, *, z: float = RANK_Z
) -> FloatArray:
    """bound_l = d_l + z * sqrt(Var_rank d_l) for debiased distances `d` (see the module doc).

    Increasing in d_l for each candidate, so a lower bound of d_l gives a lower bound of
    bound_l: what lets an index skip candidates without scoring them exactly.
    """
    sigma2 = query_sigma**2
    own2 = np.asarray(candidate_sigmas, dtype=np.float64) ** 2
    tau2 = sigma2 + own2
    rank_var = 4.0 * tau2 * np.maximum(d, 0.0) + 2.0 * dim * own2 * (2.0 * sigma2 + own2)
    bound: FloatArray = d + z * np.sqrt(rank_var)
    return bound
