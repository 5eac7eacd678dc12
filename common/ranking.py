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

Confidence (`confidences`): for the matches of one search, sorted by the bound, the chance that
match k is the nearest of them, from the noise level and the gaps. For two learnwares j, k the
difference d_j - d_k = ||m_j||^2 - ||m_k||^2 - 2 <s, m_j - m_k> (+ constants) moves with the
query's noise by -2 <z, m_j - m_k> (variance 4 sigma^2 ||m_j - m_k||^2, exact from the rows) and
with each learnware's own noise (its own terms of Var_rank, v_l = 4 sigma_l^2 max(d_l, 0) +
2 D sigma_l^2 (2 sigma^2 + sigma_l^2), independent across learnwares), so

    P(k nearer than j) = Phi((d_j - d_k) / sqrt(4 sigma^2 ||m_j - m_k||^2 + v_j + v_k)),
    c_k = min over ranks i <= k of prod_{j != i} P(i nearer than j)

(the product treats the pairs as independent; the running minimum makes it monotone in rank).
With no noise at all it is 1 for the first (0.5 per exact tie) and 0 for the others.
docs/search.md measures how well it is calibrated.

Under a "cosine" profile the market ranks learnwares by the direction of their kernel mean:
each learnware's spec m_l is indexed as a_l m_l with a_l = 1 / sqrt(max(||m_l||^2 - sigma_l^2 D,
FLOOR)) (its debiased norm; noise sigma_l a_l), so that for exact specs ||s - u_l||^2 =
||s||^2 + 1 - 2 <s, u_l> orders learnwares by <s, mu_l> / ||mu_l||, the normalised mean-map
kernel, and every formula above holds for the scaled spec. Why (docs/search.md): a learnware
trained on a mixture of many data sets has a kernel mean near the centroid of everything, and
a short one, which the plain distance rewards; the direction does not.

A "projected" profile's feature map subtracts a public centre c before clipping (`features`);
the market adds it back to every spec, learnware's and query's alike (`offset`, noise-free, so
each spec's noise is unchanged), then compares as under "cosine": the direction of c + m.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from lmdock.common.profile import DIRECTIONAL
from lmdock.common.spec import ComparedProfile, Spec, debiased_sq_distance

__all__ = ["RANK_Z", "Distances", "comparable", "compared_query", "confidences", "distances", "rank_bound"]

#: Standard deviations added to a distance before ranking (one-sided 97.7 %).
RANK_Z = 2.0

FloatArray = npt.NDArray[np.float64]

#: The smallest debiased squared norm a cosine profile divides by.
FLOOR = 1e-6


def comparable(
    profile: ComparedProfile, values: npt.NDArray[np.float32], sigma: float
) -> tuple[npt.NDArray[np.float32], float]:
    """A learnware's spec as its profile's index holds it: as it is, or under a directional
    profile offset and scaled to unit debiased norm (the values and the noise scaled alike; see
    the module doc)."""
    if profile.kernel not in DIRECTIONAL:
        return values, sigma
    v = _offset(profile, values)
    scale = 1.0 / np.sqrt(max(float(v @ v) - sigma**2 * v.shape[0], FLOOR))
    return (v * scale).astype(np.float32), sigma * scale


def compared_query(profile: ComparedProfile, query: Spec) -> Spec:
    """A query as its profile's index compares it: offset under a projected profile (the
    noise unchanged), as it is otherwise. A query is never scaled: its norm is common to every
    distance of one search."""
    if not profile.offset:
        return query
    return dataclasses.replace(query, values=_offset(profile, query.values).astype(np.float32))


def _offset(profile: ComparedProfile, values: npt.NDArray[np.float32]) -> FloatArray:
    """`values` plus the profile's public offset (none for most kinds), in float64."""
    v = values.astype(np.float64)
    return v + np.asarray(profile.offset, dtype=np.float64) if profile.offset else v


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


def confidences(
    d: FloatArray, rows: npt.NDArray[np.float32], query_sigma: float, candidate_sigmas: npt.ArrayLike
) -> FloatArray:
    """c_k for matches sorted by the bound: distances `d`, spec rows, noise (module doc)."""
    m = np.asarray(rows, dtype=np.float64)
    k, dim = m.shape
    if k == 0:
        return np.zeros(0)
    own2 = np.asarray(candidate_sigmas, dtype=np.float64) ** 2
    own = 4.0 * own2 * np.maximum(d, 0.0) + 2.0 * dim * own2 * (2.0 * query_sigma**2 + own2)
    sq = np.sum(m * m, axis=1)
    apart = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (m @ m.T), 0.0)
    var = 4.0 * query_sigma**2 * apart + own[:, None] + own[None, :]
    gap = d[None, :] - d[:, None]  # [i, j]: d_j - d_i
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, gap / np.sqrt(np.where(var > 0, var, 1.0)), np.sign(gap) * np.inf)
    wins = np.where(np.isnan(z) | (gap == 0) & (var == 0), 0.5, _phi(z))
    np.fill_diagonal(wins, 1.0)
    out: FloatArray = np.minimum.accumulate(np.prod(wins, axis=1))
    return out


def _phi(z: FloatArray) -> FloatArray:
    """The standard normal CDF, 0.5 erfc(-z / sqrt 2) (no cancellation in the lower tail).

    math.erfc over a list, not np.vectorize: the same values, without vectorize's per-call
    setup (a third of a top-5 search's confidences, docs/performance.md)."""
    scaled = -z / math.sqrt(2.0)
    erfc = np.array([math.erfc(x) for x in scaled.ravel().tolist()], np.float64).reshape(scaled.shape)
    out: FloatArray = 0.5 * erfc
    return out


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
