"""The uncertainty of a search distance and the bound the market ranks by (common/ranking.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lmdock.common.ranking import RANK_Z, confidences, distances
from lmdock.common.spec import EXACT, Privacy, Spec


def spec(values, sigma: float) -> Spec:
    privacy = EXACT if sigma == 0 else Privacy(epsilon=1.0, delta=1e-6, sigma=sigma, size_bucket=64)
    return Spec("p", np.asarray(values, dtype=np.float32), privacy)


def test_known_values() -> None:
    """D = 4, query (1, 0, 0, 0) with sigma 0.5; candidates: exact (0, 0, 0, 0) and a noisy copy
    of the query (sigma_l 0.5), and the origin again with sigma_l 0.5."""
    query = spec([1, 0, 0, 0], 0.5)
    found = distances(
        query, np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], np.float32), np.array([0, 0.5, 0.5])
    )
    # d = ||s - m||^2 - (sigma^2 + sigma_l^2) D
    assert found.distance.tolist() == [1 - 0.25 * 4, 0 - 0.5 * 4, 1 - 0.5 * 4]
    # plug-in ||Delta||^2 = max(d, 0) = 0 in all three rows: Var = 2 D tau^4
    assert found.sd.tolist() == pytest.approx(
        [math.sqrt(8 * 0.25**2), math.sqrt(8 * 0.5**2), math.sqrt(8 * 0.5**2)]
    )
    # ranking variance: 2 D sigma_l^2 (2 sigma^2 + sigma_l^2); nothing for the exact candidate
    rank_sd = math.sqrt(8 * 0.25 * (0.5 + 0.25))
    assert found.bound.tolist() == pytest.approx([0.0, -2 + RANK_Z * rank_sd, -1 + RANK_Z * rank_sd])
    far = distances(spec([1, 0, 0, 0], 0.1), np.array([[-1, 0, 0, 0]], np.float32), np.array([0.2]))
    d, tau2 = 4 - 0.05 * 4, 0.05
    assert far.distance[0] == pytest.approx(d)
    assert far.sd[0] == pytest.approx(math.sqrt(4 * tau2 * d + 8 * tau2**2))
    rank_var = 4 * tau2 * d + 8 * 0.04 * (2 * 0.01 + 0.04)
    assert far.bound[0] == pytest.approx(d + RANK_Z * math.sqrt(rank_var))


def test_exact_candidates_keep_the_point_distances_order(rng) -> None:
    query = spec(rng.standard_normal(32) * 0.1, 0.3)
    matrix = rng.standard_normal((50, 32)).astype(np.float32) * 0.2
    found = distances(query, matrix, np.zeros(50))
    assert (
        np.argsort(found.bound, kind="stable").tolist() == np.argsort(found.distance, kind="stable").tolist()
    )


def test_the_variances_match_gaussian_noise() -> None:
    """Monte Carlo over fresh noise on both specs: the distance's variance is 4 tau^2 ||Delta||^2
    + 2 D tau^4; without the query's own noise energy (the same for every candidate), the
    ranking's is 4 tau^2 ||Delta||^2 + 2 D sigma_l^2 (2 sigma^2 + sigma_l^2)."""
    rng = np.random.default_rng(5)
    dim, sigma, own = 64, 0.15, 0.1
    mu, mu_l = rng.standard_normal(dim), rng.standard_normal(dim)
    mu_l = mu + (mu_l / np.linalg.norm(mu_l))  # ||Delta||^2 = 1
    draws = 6000
    d = np.empty(draws)
    reported = np.empty(draws)
    rank_part = np.empty(draws)
    for i in range(draws):
        z = rng.standard_normal(dim) * sigma
        query = spec(mu + z, sigma)
        found = distances(
            query, (mu_l + rng.standard_normal(dim) * own)[None].astype(np.float32), np.array([own])
        )
        d[i], reported[i] = found.distance[0], found.sd[0] ** 2
        rank_part[i] = d[i] - (np.sum(z**2) - sigma**2 * dim)
    tau2 = sigma**2 + own**2
    assert np.mean(d) == pytest.approx(1.0, abs=0.02)
    assert np.var(d) == pytest.approx(4 * tau2 + 2 * dim * tau2**2, rel=0.06)
    assert np.mean(reported) == pytest.approx(np.var(d), rel=0.06)
    assert np.var(rank_part) == pytest.approx(4 * tau2 + 2 * dim * own**2 * (2 * sigma**2 + own**2), rel=0.06)


def test_a_noisier_candidate_pays_more(rng) -> None:
    query = spec(rng.standard_normal(16) * 0.1, 0.2)
    rows = np.repeat(rng.standard_normal((1, 16)).astype(np.float32) * 0.1, 3, axis=0)
    found = distances(query, rows, np.array([0.0, 0.1, 0.5]))
    charge = found.bound - found.distance
    assert charge[0] < charge[1] < charge[2]


def test_confidences_known_values_ties_and_monotone_in_rank() -> None:
    dim = 4
    rows = np.zeros((3, dim), dtype=np.float32)
    rows[0, 0] = rows[1, 1] = rows[2, 2] = 0.5  # ||m_i - m_j|| = 0.5 sqrt 2
    d = np.array([0.1, 0.2, 0.6])
    # with no noise the order is certain
    assert confidences(d, rows, 0.0, np.zeros(3)).tolist() == [1.0, 0.0, 0.0]
    # two exact learnwares, query noise 0.1: Phi(0.1 / (2 * 0.1 * 0.7071)) = Phi(0.7071)
    two = confidences(d[:2], rows[:2], 0.1, np.zeros(2))
    assert two == pytest.approx([0.76025, 0.23975], abs=1e-5)
    three = confidences(d, rows, 0.1, np.zeros(3))
    assert np.all(np.diff(three) <= 0) and 0 < three[0] < two[0]
    # an exact tie with no noise: a coin toss between the two
    assert confidences(np.array([0.3, 0.3]), rows[:2], 0.0, np.zeros(2)).tolist() == [0.5, 0.5]
    assert confidences(np.zeros(0), rows[:0], 0.1, np.zeros(0)).size == 0


def _confidences_with_vectorized_erfc(d, rows, query_sigma, candidate_sigmas):
    """`confidences` as it was before its normal CDF left np.vectorize (the reference)."""
    m = np.asarray(rows, dtype=np.float64)
    dim = m.shape[1]
    own2 = np.asarray(candidate_sigmas, dtype=np.float64) ** 2
    own = 4.0 * own2 * np.maximum(d, 0.0) + 2.0 * dim * own2 * (2.0 * query_sigma**2 + own2)
    sq = np.sum(m * m, axis=1)
    apart = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (m @ m.T), 0.0)
    var = 4.0 * query_sigma**2 * apart + own[:, None] + own[None, :]
    gap = d[None, :] - d[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, gap / np.sqrt(np.where(var > 0, var, 1.0)), np.sign(gap) * np.inf)
    phi = 0.5 * np.vectorize(math.erfc, otypes=[np.float64])(-z / math.sqrt(2.0))
    wins = np.where(np.isnan(z) | (gap == 0) & (var == 0), 0.5, phi)
    np.fill_diagonal(wins, 1.0)
    return np.minimum.accumulate(np.prod(wins, axis=1))


@pytest.mark.parametrize("seed", range(6))
def test_confidences_equal_the_vectorized_reference_bit_for_bit(seed: int) -> None:
    """Exact and noisy rows, exact ties, no query noise and some: the same values as before."""
    rng = np.random.default_rng(seed)
    for k in (1, 2, 5, 12):
        rows = rng.standard_normal((k, 16)).astype(np.float32)
        rows[k // 2] = rows[0]  # an exact duplicate
        d = np.sort(rng.random(k))
        d[k // 2] = d[0]
        sigmas = np.where(rng.random(k) < 0.4, rng.uniform(0.01, 0.3, k), 0.0)
        for query_sigma in (0.0, 0.05, 0.5):
            got = confidences(d, rows, query_sigma, sigmas)
            assert np.array_equal(got, _confidences_with_vectorized_erfc(d, rows, query_sigma, sigmas))
