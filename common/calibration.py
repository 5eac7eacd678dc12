"""Calibration of the Gaussian mechanism (Balle & Wang, ICML 2018, "analytic Gaussian").

Adding N(0, sigma^2 I) to a query f with L2 sensitivity Delta is (epsilon, delta)-DP iff

    delta >= Phi(Delta / (2 sigma) - epsilon sigma / Delta)
             - e^epsilon * Phi(-Delta / (2 sigma) - epsilon sigma / Delta)        (Thm. 8)

where Phi is the standard normal CDF. The right-hand side falls as sigma grows, so the
smallest valid sigma is found by bisection. Unlike the classic bound
sigma = Delta * sqrt(2 ln(1.25 / delta)) / epsilon, this is exact and valid for every epsilon > 0.
"""

from __future__ import annotations

import math

from lmdock.common.errors import InvalidArgument

__all__ = ["analytic_delta", "analytic_sigma", "classic_sigma", "validate_privacy"]


def validate_privacy(*, epsilon: float, delta: float) -> None:
    """Raise InvalidArgument unless 0 < epsilon <= 100 and 0 < delta < 1 (both finite)."""
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and 0 < epsilon <= 100):
        raise InvalidArgument(f"epsilon must be a number in (0, 100], got {epsilon!r}")
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and 0 < delta < 1):
        raise InvalidArgument(f"delta must be a number in (0, 1), got {delta!r}")


def _phi(t: float) -> float:
    """Standard normal CDF, accurate in the tails (erfc, not 1 - erf)."""
    return 0.5 * math.erfc(-t / math.sqrt(2.0))


def analytic_delta(*, sigma: float, sensitivity: float, epsilon: float) -> float:
    """The exact delta of the Gaussian mechanism at epsilon (Balle & Wang, Thm. 8)."""
    if sigma <= 0 or sensitivity <= 0:
        raise ValueError("sigma and sensitivity must be positive")
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    return max(0.0, _phi(a - b) - math.exp(epsilon) * _phi(-a - b))


def analytic_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest sigma (to 1e-12 relative) making the Gaussian mechanism (epsilon, delta)-DP.

    The result is rounded up, so analytic_delta(sigma=result, ...) <= delta always holds.
    """
    validate_privacy(epsilon=epsilon, delta=delta)
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise InvalidArgument(f"sensitivity must be positive, got {sensitivity!r}")

    def ok(s: float) -> bool:
        return analytic_delta(sigma=s, sensitivity=sensitivity, epsilon=epsilon) <= delta

    hi = sensitivity
    while not ok(hi):
        hi *= 2.0
    lo = hi / 2.0
    while ok(lo) and lo > sensitivity * 1e-12:
        hi, lo = lo, lo / 2.0
    while hi - lo > hi * 1e-12:
        mid = 0.5 * (lo + hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def classic_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    """The classic bound Delta * sqrt(2 ln(1.25/delta)) / epsilon (valid only for epsilon < 1).

    Kept for comparison in docs and tests; lmdock calibrates with `analytic_sigma`.
    """
    validate_privacy(epsilon=epsilon, delta=delta)
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon
