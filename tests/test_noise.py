import math

import numpy as np
import pytest
from lmdock.common.noise import SAMPLER_TV_PER_COORD, discrete_gaussian, os_uniform, rounding_tv


def seeded(seed: int):
    rng = np.random.default_rng(seed)
    return lambda n: rng.random(n)


def exact_pmf(scale: float, support: int) -> np.ndarray:
    k = np.arange(-support, support + 1)
    w = np.exp(-(k**2) / (2 * scale**2))
    return w / w.sum()


@pytest.mark.parametrize("scale", [0.7, 1.3, 4.0])
def test_small_scale_matches_the_exact_law(scale: float) -> None:
    n = 200_000
    draws = discrete_gaussian(scale, n, uniform=seeded(7))
    support = math.ceil(6 * scale)
    pmf = exact_pmf(scale, support)
    counts = np.array([(draws == k).sum() for k in range(-support, support + 1)])
    expected = pmf * n
    keep = expected > 20
    chi2 = (((counts - expected) ** 2) / expected)[keep].sum()
    dof = keep.sum() - 1
    # chi-square with dof degrees of freedom: mean dof, sd sqrt(2 dof); 6 sd is a 1e-9 fluke
    assert chi2 < dof + 6 * math.sqrt(2 * dof)


def test_large_scale_moments() -> None:
    scale = 50_000.0
    draws = discrete_gaussian(scale, 400_000, uniform=seeded(3)).astype(np.float64)
    assert abs(draws.mean()) < 5 * scale / math.sqrt(len(draws))
    assert draws.std() / scale == pytest.approx(1.0, abs=0.01)
    assert draws.dtype == np.float64  # integers on the grid, converted here only


def test_default_source_is_the_os_csprng_and_not_reproducible() -> None:
    a = discrete_gaussian(1000.0, 64)
    b = discrete_gaussian(1000.0, 64)
    assert not np.array_equal(a, b)
    u = os_uniform(10_000)
    assert u.min() >= 0 and u.max() < 1 and 0.45 < u.mean() < 0.55


def test_invalid_scale() -> None:
    with pytest.raises(ValueError):
        discrete_gaussian(0.0, 3)


@pytest.mark.parametrize("scale", [10.0, 30.0, 100.0])
def test_rounding_tv_bound_holds_against_the_exact_distance(scale: float) -> None:
    """TV(N_Z(0, s^2), Round(N(0, s^2))) computed exactly stays below the bound 1/(10 s^2)."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    k = np.arange(-int(40 * scale), int(40 * scale) + 1, dtype=np.float64)
    log_w = -(k**2) / (2 * scale**2)
    p = np.exp(log_w - logsumexp(log_w))
    upper, lower = (k + 0.5) / scale, (k - 0.5) / scale
    q = np.where(k >= 0, norm.sf(lower) - norm.sf(upper), norm.cdf(upper) - norm.cdf(lower))
    tv = 0.5 * np.abs(p - q).sum()
    assert tv <= rounding_tv(scale)
    assert tv == pytest.approx(0.0202 / scale**2, rel=0.02)  # the bound is loose by 5x, not 1000x


def test_rounding_bound_refuses_small_scales() -> None:
    with pytest.raises(ValueError):
        rounding_tv(5.0)


@pytest.mark.parametrize("scale", [3.0, 2.0**20 * 1.5])
def test_few_coins_per_sample_so_the_float_error_is_tiny(scale: float) -> None:
    """The sampler's TV bound assumes about 11 uniforms per draw (each off by <= 2^-51)."""
    rng = np.random.default_rng(5)
    used = [0]

    def counting(n: int) -> np.ndarray:
        used[0] += n
        return rng.random(n)

    count = 20_000
    discrete_gaussian(scale, count, uniform=counting)
    per_draw = used[0] / count
    assert per_draw < 20
    assert per_draw * 2.0**-51 < SAMPLER_TV_PER_COORD


def test_uniform_integers_are_exact_and_uniform() -> None:
    from lmdock.common.noise import _uniform_below

    rng = np.random.default_rng(9)
    draws = _uniform_below(7, 70_000, lambda n: rng.random(n))
    counts = np.bincount(draws, minlength=7)
    assert draws.min() == 0 and draws.max() == 6
    assert np.all(np.abs(counts - 10_000) < 6 * math.sqrt(10_000))
