import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lmdock.common.calibration import analytic_delta, analytic_sigma, classic_sigma
from lmdock.common.errors import InvalidArgument


def test_known_value_epsilon_1_delta_1e6() -> None:
    # Balle & Wang's calibration, recomputed independently with scipy-free bisection.
    sigma = analytic_sigma(epsilon=1.0, delta=1e-6, sensitivity=1.0)
    assert sigma == pytest.approx(4.2247, abs=1e-3)
    assert analytic_delta(sigma=sigma, sensitivity=1.0, epsilon=1.0) <= 1e-6


def test_analytic_beats_classic_where_classic_is_valid() -> None:
    for eps in (0.1, 0.5, 0.9):
        assert analytic_sigma(epsilon=eps, delta=1e-5, sensitivity=1.0) < classic_sigma(
            epsilon=eps, delta=1e-5, sensitivity=1.0
        )


def test_sigma_scales_linearly_with_sensitivity() -> None:
    a = analytic_sigma(epsilon=1.0, delta=1e-6, sensitivity=1.0)
    b = analytic_sigma(epsilon=1.0, delta=1e-6, sensitivity=0.01)
    assert b == pytest.approx(a * 0.01, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    eps=st.floats(min_value=0.05, max_value=20.0),
    log_delta=st.floats(min_value=-12, max_value=-2),
    sens=st.floats(min_value=1e-4, max_value=10.0),
)
def test_sigma_is_the_smallest_valid(eps: float, log_delta: float, sens: float) -> None:
    delta = 10.0**log_delta
    sigma = analytic_sigma(epsilon=eps, delta=delta, sensitivity=sens)
    assert analytic_delta(sigma=sigma, sensitivity=sens, epsilon=eps) <= delta
    assert analytic_delta(sigma=sigma * (1 - 1e-6), sensitivity=sens, epsilon=eps) > delta * (1 - 1e-3)


@pytest.mark.parametrize(
    ("epsilon", "delta"),
    [(0, 1e-6), (-1, 1e-6), (math.inf, 1e-6), (math.nan, 1e-6), (1, 0), (1, 1), (1, -1e-6), (1000, 1e-6)],
)
def test_invalid_privacy_parameters_are_refused(epsilon: float, delta: float) -> None:
    with pytest.raises(InvalidArgument):
        analytic_sigma(epsilon=epsilon, delta=delta, sensitivity=1.0)


def test_privacy_parameters_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        analytic_sigma(1.0, 1e-6, 1.0)  # type: ignore[misc]
