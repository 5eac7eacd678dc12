"""Explain a kernel mean as a mixture of learnwares' kernel means (simplex least squares).

Data drawn as a mixture sum_l pi_l P_l has kernel mean sum_l pi_l mu_l. Given the query spec s
(noise sigma per coordinate) and candidate specs mu_1..mu_k (rows of M, noise sigma_l), the
mixture weights are

    w* = argmin_{w >= 0, sum(w) = 1}  f(w),   f(w) = w'Gw - 2 b'w + c,

    G = M M' - diag(sigma_l^2 D),   b = M s,   c = ||s||^2 - sigma^2 D,

which is ||s - M'w||^2 with every noise energy removed, so that E f(w) = ||mu - M'w||^2 for
independent noises (D = dimension). f(w*) is the *residual*: the estimated squared MMD between
the query's data and the best mixture, in the same units as a single match's distance.

As in the ranking (`ranking`), a noisy spec must not win weight by luck: the self term G_ll,
whose noise ||z_l||^2 - sigma_l^2 D + 2 mu_l.z_l has variance 2 D sigma_l^4 + 4 sigma_l^2 ||mu_l||^2,
is charged RANK_Z of its standard deviations (plug-in ||mu_l||^2 ~ max(G_ll, 0)). Exact specs
pay nothing; for the others the residual includes the charge, so it errs towards too large.

Solver: projected gradient descent with Nesterov momentum (FISTA, step 1/L with
L = 2 lambda_max(G)), projecting onto the probability simplex by sorting (Duchi et al., 2008).
When noise makes G indefinite, its spectrum is shifted up to 0 so that f stays convex.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from lmdock.common.ranking import RANK_Z

__all__ = ["Mixture", "explain_as_mixture", "project_to_simplex", "simplex_least_squares"]

FloatArray = npt.NDArray[np.float64]
AnyFloats = npt.NDArray[np.floating[Any]]


def project_to_simplex(v: FloatArray) -> FloatArray:
    """The Euclidean projection of v onto {w : w >= 0, sum(w) = 1}."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    ks = np.arange(1, len(v) + 1)
    rho = int(np.nonzero(u - cumulative / ks > 0)[0][-1])
    theta = cumulative[rho] / (rho + 1)
    projected: FloatArray = np.maximum(v - theta, 0.0)
    return projected


def simplex_least_squares(
    gram: FloatArray, linear: FloatArray, *, iterations: int = 5000, tolerance: float = 1e-13
) -> FloatArray:
    """argmin over the simplex of w'Gw - 2 b'w for a symmetric positive semi-definite G."""
    k = len(linear)
    if k == 1:
        return np.ones(1)
    lipschitz = 2.0 * float(np.linalg.eigvalsh(gram)[-1])
    if lipschitz <= 0:
        return np.full(k, 1.0 / k)
    w = y = np.full(k, 1.0 / k)
    t = 1.0
    for _ in range(iterations):
        gradient = 2.0 * (gram @ y - linear)
        w_next = project_to_simplex(y - gradient / lipschitz)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = w_next + ((t - 1.0) / t_next) * (w_next - w)
        done = float(np.sum((w_next - w) ** 2)) < tolerance
        w, t = w_next, t_next
        if done:
            break
    return w


@dataclass(frozen=True)
class Mixture:
    indices: tuple[int, ...]  # rows of the candidate matrix, heaviest first
    weights: tuple[float, ...]  # non-negative, sum to 1
    residual: float  # f(w*): debiased squared distance of the query to the mixture


def _objective_terms(
    query: FloatArray, query_sigma: float, matrix: FloatArray, sigmas: FloatArray, z: float
) -> tuple[FloatArray, FloatArray, float]:
    dim = query.shape[0]
    own = sigmas**2
    gram = matrix @ matrix.T - np.diag(own * dim)
    self_terms = np.maximum(np.diag(gram), 0.0)
    gram = gram + np.diag(z * np.sqrt(2.0 * dim * own**2 + 4.0 * own * self_terms))
    gram = (gram + gram.T) / 2.0
    lowest = float(np.linalg.eigvalsh(gram)[0])
    if lowest < 0:
        gram = gram - lowest * np.eye(len(gram))
    return gram, matrix @ query, float(query @ query) - query_sigma**2 * dim


def explain_as_mixture(
    query: AnyFloats,
    query_sigma: float,
    matrix: AnyFloats,
    sigmas: AnyFloats,
    *,
    max_components: int = 4,
    min_weight: float = 0.05,
    z: float = RANK_Z,
) -> Mixture:
    """Weights over at most `max_components` rows of `matrix` (each >= `min_weight`) explaining `query`.

    `z`: standard deviations of its own noise charged to each component (0: point estimates).

    Solves over all rows, keeps the heaviest components, and solves again over those.
    """
    q, m, s = (np.asarray(x, dtype=np.float64) for x in (query, matrix, sigmas))
    gram, linear, constant = _objective_terms(q, query_sigma, m, s, z)
    weights = simplex_least_squares(gram, linear)
    order = [int(i) for i in np.argsort(-weights, kind="stable")[:max_components] if weights[i] >= min_weight]
    keep = order or [int(np.argmax(weights))]
    sub = np.ix_(keep, keep)
    final = simplex_least_squares(gram[sub], linear[keep])
    residual = float(final @ gram[sub] @ final - 2.0 * final @ linear[keep] + constant)
    ranked = sorted(zip(keep, final.tolist(), strict=True), key=lambda pair: -pair[1])
    return Mixture(
        indices=tuple(i for i, _ in ranked), weights=tuple(w for _, w in ranked), residual=residual
    )
