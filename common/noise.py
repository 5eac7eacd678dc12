"""Discrete Gaussian noise from a cryptographically secure source.

Why not `numpy.random.normal`? Floating-point noise leaks the un-noised value through its
low-order bits (Mironov, CCS 2012), and a seeded or global generator is predictable. lmdock
therefore adds *integer* noise on a fixed grid GRID = 2^-20:

    release = GRID * (round(mu / GRID) + K),   K ~ N_Z(0, s^2) i.i.d. per coordinate, s = sigma / GRID

where N_Z is the discrete Gaussian, P[K = k] ∝ exp(-k^2 / (2 s^2)), sampled with the rejection
algorithm of Canonne, Kamath & Steinke (NeurIPS 2020, Alg. 3): draw a discrete Laplace
candidate Y with scale t = floor(s) + 1 and keep it with probability
exp(-(|Y| - s^2/t)^2 / (2 s^2)). The output is an integer, so no float bits depend on mu.

Every uniform draw comes from the operating system's CSPRNG (`secrets`), 53 bits at a time.
Acceptance probabilities are evaluated in double precision, so each coordinate's law is
within total variation SAMPLER_TV_PER_COORD of the exact discrete Gaussian; callers add
(1 + e^eps) * dims * SAMPLER_TV_PER_COORD to delta (see `spec.release`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["GRID", "SAMPLER_TV_PER_COORD", "UniformSource", "discrete_gaussian", "os_uniform"]

#: Spacing of the output grid. Multiples of 2^-20 below 2^4 are exact in float32.
GRID = 2.0**-20

#: Bound on the total-variation distance between one sampled coordinate and the exact law:
#: a handful of Bernoulli trials per coordinate, each off by at most a few units of 2^-53.
SAMPLER_TV_PER_COORD = 2.0**-40

#: A source of i.i.d. uniform floats in [0, 1): called with a count, returns that many.
UniformSource = Callable[[int], npt.NDArray[np.float64]]


def os_uniform(count: int) -> npt.NDArray[np.float64]:
    """`count` uniforms in [0, 1) with 53 random bits each, from the OS CSPRNG."""
    raw = np.frombuffer(secrets.token_bytes(8 * count), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _bernoulli_exp(x: npt.NDArray[np.float64], uniform: UniformSource) -> npt.NDArray[np.bool_]:
    """Bernoulli(exp(-x)) for each x >= 0."""
    return uniform(x.size) < np.exp(-x)


def _discrete_laplace(t: int, count: int, uniform: UniformSource) -> npt.NDArray[np.int64]:
    """`count` draws with P[Y = y] ∝ exp(-|y| / t) (CKS Alg. 2, vectorised rejection)."""
    out = np.empty(count, dtype=np.int64)
    todo = np.arange(count)
    while todo.size:
        m = todo.size
        u = np.minimum((uniform(m) * t).astype(np.int64), t - 1)  # uniform on {0..t-1}
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
    if scale > 2.0**40:
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
