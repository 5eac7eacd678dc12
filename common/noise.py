"""Discrete Gaussian noise from a cryptographically secure source.

Why not `numpy.random.normal`? Floating-point noise leaks the un-noised value through its
low-order bits (Mironov, CCS 2012), and a seeded or global generator is predictable. lmdock
therefore adds *integer* noise to a value snapped to a public grid g (see `spec.release`):

    release = g * (round(mu / g) + K),   K ~ N_Z(0, s^2) i.i.d. per coordinate, s = sigma / g

where N_Z is the discrete Gaussian, P[K = k] ∝ exp(-k^2 / (2 s^2)), sampled with the rejection
algorithm of Canonne, Kamath & Steinke (NeurIPS 2020, Alg. 3): draw a discrete Laplace
candidate Y with scale t = floor(s) + 1 and keep it with probability
exp(-(|Y| - s^2/t)^2 / (2 s^2)). The output is an integer, so no float bits depend on mu.

Two total-variation (TV) distances are paid for in delta (a mechanism within TV eta of an
(eps, delta)-DP one is (eps, delta + (1 + e^eps) eta)-DP):

* SAMPLER_TV_PER_COORD, sampler vs the exact N_Z: uniform integers are exact (rejection on
  CSPRNG words); each Bernoulli(exp(-x)) compares a 53-bit CSPRNG uniform with a double, so it
  is off by at most 2^-51; coupling the ideal and the real sampler on shared coins, they differ
  only if one of the coins they toss differs, so TV <= E[#coins] * 2^-51: about 11 coins on
  average, whatever s (tests/test_noise.py counts them), so about 2^-47.5. The constant 2^-44
  leaves a factor of 11 on top; it is what makes epsilon = 8 releasable at delta = 1e-6 for
  D = 384 ((1 + e^8) * 384 * 2^-44 = 6.5e-8, against 1.04e-6 with 2^-40).
* `rounding_tv(s)`, N_Z(0, s^2) vs Round(N(0, s^2)). Adding Round(G) to an integer vector is
  post-processing of the continuous Gaussian mechanism, so the analytic calibration holds for
  it exactly; the discrete Gaussian is within TV about 0.02 / s^2 of it. Bound: for
  q(k) = P[Round(G) = k] and p(k) = P[K = k],
      q(k) / p(k) = (1 + theta) * int_{-1/2}^{1/2} exp(-(2 k u + u^2) / (2 s^2)) du
  with theta <= 3 exp(-2 pi^2 s^2) (Poisson summation), and the integral lies in
  [exp(-1/(8 s^2)), 1 + k^2 cosh(k / (2 s^2)) / (24 s^4)]; summing |q - p| / 2 over k gives at
  most (1/(8 s^2) + 1/(24 s^2)) / 2 = 1/(12 s^2) up to factors 1 + O(1/s^2). We use 1/(10 s^2)
  for s >= 10 (the exact TV, 0.0202 / s^2, is computed in tests/test_noise.py).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = [
    "SAMPLER_TV_PER_COORD",
    "UniformSource",
    "discrete_gaussian",
    "os_uniform",
    "rounding_tv",
]

#: Bound on the TV distance between one sampled coordinate and the exact discrete Gaussian.
SAMPLER_TV_PER_COORD = 2.0**-44

#: A source of i.i.d. uniform floats in [0, 1) on the 2^-53 grid: called with a count.
UniformSource = Callable[[int], npt.NDArray[np.float64]]

_MAX_SCALE = 2.0**40


def os_uniform(count: int) -> npt.NDArray[np.float64]:
    """`count` uniforms in [0, 1) with 53 random bits each, from the OS CSPRNG."""
    raw = np.frombuffer(secrets.token_bytes(8 * count), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def rounding_tv(scale: float) -> float:
    """Bound 1/(10 s^2) on TV(N_Z(0, s^2), Round(N(0, s^2))), valid for s >= 10."""
    if scale < 10:
        raise ValueError(f"the rounding bound needs a scale >= 10, got {scale!r}")
    return 0.1 / (scale * scale)


def _uniform_below(t: int, count: int, uniform: UniformSource) -> npt.NDArray[np.int64]:
    """`count` exact uniform integers in {0..t-1} (t <= 2^52): rejection on 53-bit words."""
    bound = (2**53 // t) * t  # accept words below the largest multiple of t
    out = np.empty(count, dtype=np.int64)
    todo = np.arange(count)
    while todo.size:
        words = (uniform(todo.size) * 2.0**53).astype(np.int64)  # exact: the 2^-53 grid
        keep = words < bound
        out[todo[keep]] = words[keep] % t
        todo = todo[~keep]
    return out


def _bernoulli_exp(x: npt.NDArray[np.float64], uniform: UniformSource) -> npt.NDArray[np.bool_]:
    """Bernoulli(exp(-x)) for each x >= 0."""
    return uniform(x.size) < np.exp(-x)


def _discrete_laplace(t: int, count: int, uniform: UniformSource) -> npt.NDArray[np.int64]:
    """`count` draws with P[Y = y] ∝ exp(-|y| / t) (CKS Alg. 2, vectorised rejection)."""
    out = np.empty(count, dtype=np.int64)
    todo = np.arange(count)
    while todo.size:
        m = todo.size
        u = _uniform_below(t, m, uniform)
        keep = _bernoulli_exp(u / t, uniform)
        # V counts successes of Bernoulli(exp(-1)) before the first failure.
        v = np.zeros(m, dtype=np.int64)
        running = np.ones(m, dtype=bool)
        while running.any():
            idx = np.flatnonzero(running)
            success = uniform(idx.size) < math.exp(-1.0)
            v[idx[success]] += 1
            running[idx[~success]] = False
        x = u + t * v
        negative = uniform(m) < 0.5
        keep &= ~(negative & (x == 0))
        y = np.where(negative, -x, x)
        out[todo[keep]] = y[keep]
        todo = todo[~keep]
    return out


def discrete_gaussian(
    scale: float, count: int, *, uniform: UniformSource = os_uniform
) -> npt.NDArray[np.int64]:
    """`count` i.i.d. draws from N_Z(0, scale^2) (CKS Alg. 3).

    `uniform` defaults to the OS CSPRNG; tests pass a seeded source to check the law.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive, got {scale!r}")
    if scale > _MAX_SCALE:
        raise ValueError("scale too large for int64 arithmetic")
    s2 = scale * scale
    t = math.floor(scale) + 1
    out = np.empty(count, dtype=np.int64)
    todo = np.arange(count)
    while todo.size:
        y = _discrete_laplace(t, todo.size, uniform)
        keep = _bernoulli_exp((np.abs(y) - s2 / t) ** 2 / (2.0 * s2), uniform)
        out[todo[keep]] = y[keep]
        todo = todo[~keep]
    return out
