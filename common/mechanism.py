"""The spec's Gaussian mechanism on a public grid: calibration and noise, vectorised.

For a kernel mean of b or more privacy units with rows of norm <= R in D dimensions:

    base      = 2R / b                                    replace-one L2 sensitivity
    sigma_0   = analytic_sigma(epsilon, delta, base)      only to place the grid
    g         = 2^(floor(log2 sigma_0) - GRID_BITS)       public grid, s = sigma / g >= 2^20
    Delta     = base + g sqrt(D)                          snapping moves each mean <= g sqrt(D) / 2
    tv        = D (SAMPLER_TV_PER_COORD + rounding_tv(sigma_0 / g))
    sigma     = analytic_sigma(epsilon, delta - (1 + e^epsilon) tv, Delta)
    release   = g (round(mu / g) + K),   K ~ N_Z(0, (sigma / g)^2)^D

Distributed noise (`shares` = t > 1: a federation's secure sum). Each of t parties adds
K_j ~ N_Z(0, s^2 / t) to its own snapped vector and only the sum reaches anyone. The sum of t
i.i.d. N_Z(0, s^2 / t) is within TV

    tau(s, t) = 10 sum_{j=1}^{t-1} exp(-2 pi^2 (s^2 / t) j / (j + 1))      per coordinate

of N_Z(0, s^2) (Kairouz, Liu & Steinke, ICML 2021, "the distributed discrete Gaussian"), and
each party's sampler adds its own SAMPLER_TV_PER_COORD, so tv = D (t SAMPLER_TV_PER_COORD +
tau(s_0, t) + rounding_tv(s_0)) with s_0 = sigma_0 / g <= s (tau falls with s). At s >= 2^20,
tau underflows to 0. Changing one party's record moves only that party's snapped term, by at
most Delta / g in grid units, as for a single release.

Why it is (epsilon, delta)-DP: g (round(mu / g) + Round(G)) with G ~ N(0, (sigma/g)^2 I) is
post-processing of the Gaussian mechanism on round(mu / g), whose sensitivity in grid units is
at most Delta / g, so it is (epsilon, delta - (1 + e^epsilon) tv)-DP (Balle & Wang, Thm. 8);
the sampled noise is within TV tv of Round(G) (see `noise`), which adds (1 + e^epsilon) tv.
Every quantity above depends only on public parameters (epsilon, delta, R, b, D).

The accountant books a calibrated release as `Calibration.cost`. Since sigma scales with Delta,
its noise multiplier sigma / Delta is analytic_sigma(epsilon, delta - paid, 1), and `calibrate`
refuses paid >= delta * MAX_TV_SHARE; so before R, b and D are known, `least_cost(epsilon,
delta)`, whose multiplier is analytic_sigma(epsilon, delta * (1 - MAX_TV_SHARE), 1) and whose
tv is 0, costs no more than any release `calibrate` allows at (epsilon, delta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from lmdock.common.accounting import Release
from lmdock.common.calibration import analytic_sigma, validate_privacy
from lmdock.common.errors import InvalidArgument
from lmdock.common.noise import (
    SAMPLER_TV_PER_COORD,
    UniformSource,
    discrete_gaussian,
    os_uniform,
    rounding_tv,
)

__all__ = [
    "GRID_BITS",
    "MAX_TV_SHARE",
    "Calibration",
    "add_noise",
    "calibrate",
    "calibrate_vector",
    "least_cost",
    "sum_tv",
]

#: The grid sits 2^GRID_BITS below the noise scale: fine enough that rounding costs nothing.
GRID_BITS = 20
#: At most this share of delta may pay for the grid and the sampler (the rest calibrates sigma).
MAX_TV_SHARE = 0.5

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Calibration:
    """Everything the mechanism needs, derived from public parameters only."""

    sigma: float  # standard deviation of the noise, in feature units
    sensitivity: float  # Delta, the L2 sensitivity of the snapped mean
    grid: float  # g
    tv_slack: float  # TV distance of the sampled release from the ideal Gaussian mechanism
    epsilon: float
    delta: float
    shares: int = 1  # parties that each add N_Z(0, (sigma / grid)^2 / shares) (module docstring)

    @property
    def share_scale(self) -> float:
        """The scale, in grid units, of one party's discrete Gaussian share of the noise."""
        return self.sigma / self.grid / math.sqrt(self.shares)

    @property
    def noise_multiplier(self) -> float:
        """sigma / Delta: what Opacus' accountants call the noise multiplier."""
        return self.sigma / self.sensitivity

    @property
    def cost(self) -> Release:
        """The release as the privacy accountant books it."""
        return Release(
            epsilon=self.epsilon,
            delta=self.delta,
            noise_multiplier=self.noise_multiplier,
            tv_slack=self.tv_slack,
        )


def calibrate(*, epsilon: float, delta: float, clip_radius: float, bucket: int, dim: int) -> Calibration:
    """The grid, sensitivity and sigma of an (epsilon, delta)-DP kernel-mean release."""
    if not (math.isfinite(clip_radius) and clip_radius > 0):
        raise InvalidArgument(f"clip radius must be positive, got {clip_radius!r}")
    if bucket < 1:
        raise InvalidArgument("bucket must be positive")
    return calibrate_vector(epsilon=epsilon, delta=delta, sensitivity=2.0 * clip_radius / bucket, dim=dim)


def sum_tv(scale: float, shares: int) -> float:
    """tau(s, t): TV bound between the sum of t i.i.d. N_Z(0, s^2 / t) and N_Z(0, s^2), per
    coordinate (module docstring); 0 for one share."""
    variance = scale * scale / shares
    return 10.0 * math.fsum(math.exp(-2 * math.pi**2 * variance * j / (j + 1)) for j in range(1, shares))


def calibrate_vector(
    *, epsilon: float, delta: float, sensitivity: float, dim: int, shares: int = 1
) -> Calibration:
    """The grid, sensitivity and sigma of an (epsilon, delta)-DP release of any `dim`-vector
    whose replace-one L2 sensitivity is `sensitivity` (a kernel mean: 2R/b; k counts: sqrt(k));
    with `shares` > 1, its noise is the sum of that many parties' shares (module docstring)."""
    if not (isinstance(shares, int) and shares >= 1):
        raise InvalidArgument(f"the noise needs at least one share, got {shares!r}")
    validate_privacy(epsilon=epsilon, delta=delta)
    if not (math.isfinite(sensitivity) and sensitivity > 0) or dim < 1:
        raise InvalidArgument("sensitivity and dimension must be positive")
    base = sensitivity
    sigma_0 = analytic_sigma(epsilon=epsilon, delta=delta, sensitivity=base)
    grid = 2.0 ** (math.floor(math.log2(sigma_0)) - GRID_BITS)
    tv = dim * (shares * SAMPLER_TV_PER_COORD + sum_tv(sigma_0 / grid, shares) + rounding_tv(sigma_0 / grid))
    paid = (1.0 + math.exp(epsilon)) * tv
    if paid >= delta * MAX_TV_SHARE:
        raise InvalidArgument(
            f"delta {delta:g} is too small for a {dim}-dimensional release at epsilon {epsilon:g}"
        )
    sensitivity = base + grid * math.sqrt(dim)
    sigma = analytic_sigma(epsilon=epsilon, delta=delta - paid, sensitivity=sensitivity)
    return Calibration(
        sigma=sigma,
        sensitivity=sensitivity,
        grid=grid,
        tv_slack=tv,
        epsilon=epsilon,
        delta=delta,
        shares=shares,
    )


def least_cost(*, epsilon: float, delta: float) -> Release:
    """A lower bound on the cost of any release `calibrate` allows at (epsilon, delta), whatever
    R, b and D (module docstring): to refuse early, before the market's profile is known."""
    multiplier = analytic_sigma(epsilon=epsilon, delta=delta * (1 - MAX_TV_SHARE), sensitivity=1.0)
    return Release(epsilon=epsilon, delta=delta, noise_multiplier=multiplier)


def add_noise(
    means: npt.ArrayLike, calibration: Calibration, *, uniform: UniformSource = os_uniform
) -> FloatArray:
    """g (round(mean / g) + K) for each row of `means` (any leading shape, last axis D).

    Vectorised so that an audit can run the mechanism 10^5 times in one call.
    """
    m = np.asarray(means, dtype=np.float64)
    g = calibration.grid
    snapped = np.round(m / g).astype(np.int64)
    noise = discrete_gaussian(calibration.sigma / g, snapped.size, uniform=uniform).reshape(snapped.shape)
    out: FloatArray = (snapped + noise).astype(np.float64) * g
    return out
