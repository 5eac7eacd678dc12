import math

import numpy as np
import pytest
from lmdock.common.noise import discrete_gaussian, os_uniform


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
