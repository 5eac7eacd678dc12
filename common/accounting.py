"""What a data set's releases cost together: composition with Opacus' accountants.

Every release (a spec, a DP training run) is a (possibly subsampled, repeated) Gaussian
mechanism, recorded as Opacus records it: a noise multiplier z = sigma / Delta, a sample rate
q and a number of steps, together with the (epsilon_i, delta_i) it was calibrated to and the
total variation tv_i by which its implementation may differ from that ideal mechanism. The
releases i = 1..k of one data set are booked at a target delta (the budget's):

    eps_sum = sum_i epsilon_i           if sum_i delta_i <= delta, else infinity   (basic)
    eps_prv = PRV(z_i, q_i, steps_i; delta - (1 + e^G) sum_i tv_i),  kept if <= G   (PRV)
    epsilon = min(eps_sum, eps_prv)

where G is a public guess (first sum_i epsilon_i, then twice the PRV value). Both are valid
(epsilon, delta) guarantees, so their minimum is too. Basic composition: each release is
(epsilon_i, delta_i)-DP as implemented (its tv is paid inside delta_i), so k of them are
(sum epsilon_i, sum delta_i)-DP. PRV: Opacus' PRVAccountant (Gopi, Lee & Wutschitz 2021)
returns an upper bound on the epsilon of the composed ideal Gaussian mechanisms at the delta
it is given; the implemented releases are within TV sum tv_i of them, which costs
(1 + e^eps_prv) sum tv_i <= (1 + e^G) sum tv_i of delta.

Why both: alone, an analytically calibrated epsilon = 1, delta = 1e-6 spec costs exactly 1 at
delta = 1e-6 by basic composition, while PRV books it as 1.010 (Opacus' RDP accountant: 1.078),
so a cap of epsilon = 1 still allows it; from the second release on PRV is much tighter than
the sum (two such releases at delta = 2e-6: 1.413 instead of 2). Booking at a fixed delta keeps
the booked epsilon from ever going down when a release is added.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmdock.common.calibration import validate_privacy
from lmdock.common.errors import InvalidArgument

__all__ = ["Budget", "Release", "Spent", "compose", "prv_epsilon"]

#: Accuracy asked of the PRV accountant; it returns an upper bound within this of the truth.
PRV_EPS_ERROR = 0.01


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        raise InvalidArgument(
            f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}"
        )


@dataclass(frozen=True, kw_only=True)
class Release:
    """One release as the accountant sees it (keyword-only, validated)."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1
    tv_slack: float = 0.0

    def __post_init__(self) -> None:
        validate_privacy(epsilon=self.epsilon, delta=self.delta)
        _positive("noise_multiplier", self.noise_multiplier)
        _positive("tv_slack", self.tv_slack, allow_zero=True)
        if not (0 < self.sample_rate <= 1):
            raise InvalidArgument(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise InvalidArgument(f"steps must be a positive integer, got {self.steps!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "tv_slack": self.tv_slack,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Release:
        try:
            return cls(
                epsilon=float(data["epsilon"]),
                delta=float(data["delta"]),
                noise_multiplier=float(data["noise_multiplier"]),
                sample_rate=float(data.get("sample_rate", 1.0)),
                steps=int(data.get("steps", 1)),
                tv_slack=float(data.get("tv_slack", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise InvalidArgument(f"malformed release: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class Budget:
    """A per-data-set cap: the composed releases must stay (epsilon, delta)-DP."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        validate_privacy(epsilon=self.epsilon, delta=self.delta)


@dataclass(frozen=True)
class Spent:
    """The composed guarantee of a data set's releases: (epsilon, delta)-DP at the target delta."""

    epsilon: float
    delta: float
    releases: int
    method: str  # "none", "basic" or "prv": which bound gave epsilon

    def within(self, budget: Budget) -> bool:
        # a hair of tolerance: basic composition sums floats
        return self.epsilon <= budget.epsilon * (1 + 1e-12) and self.delta <= budget.delta

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "releases": self.releases,
            "method": self.method,
        }


def prv_epsilon(releases: Sequence[Release], *, delta: float) -> float:
    """Opacus' PRV upper bound on the epsilon of the composed ideal mechanisms at `delta`."""
    if not releases:
        return 0.0
    if not 0 < delta < 1:
        return math.inf
    from opacus.accountants import PRVAccountant

    steps: Counter[tuple[float, float]] = Counter()
    for r in releases:
        steps[(r.noise_multiplier, r.sample_rate)] += r.steps
    accountant = PRVAccountant()
    accountant.history = [(z, q, n) for (z, q), n in steps.items()]
    try:
        with warnings.catch_warnings():
            # q = 1 (no subsampling) makes Opacus take log(0) = -inf on purpose, and its domain
            # bound warns about RDP orders; neither is actionable, and the CLI must stay readable
            warnings.simplefilter("ignore")
            return float(accountant.get_epsilon(delta, eps_error=PRV_EPS_ERROR))
    except (ValueError, ArithmeticError):  # outside the accountant's numerical range
        return math.inf


def compose(releases: Sequence[Release], *, delta: float) -> Spent:
    """The epsilon at which `releases` together are (epsilon, delta)-DP (module docstring)."""
    validate_privacy(epsilon=1.0, delta=delta)
    if not releases:
        return Spent(epsilon=0.0, delta=delta, releases=0, method="none")
    eps_sum = math.fsum(r.epsilon for r in releases)
    if math.fsum(r.delta for r in releases) > delta * (1 + 1e-12):  # float sums of equal deltas
        eps_sum = math.inf
    tv = math.fsum(r.tv_slack for r in releases)
    guess = math.fsum(r.epsilon for r in releases)
    eps_prv = math.inf
    for _ in range(2):
        paid = (1.0 + math.exp(min(guess, 700.0))) * tv
        candidate = prv_epsilon(releases, delta=delta - paid)
        if candidate <= guess:
            eps_prv = candidate
            break
        guess = 2.0 * candidate
    if eps_prv < eps_sum:
        return Spent(epsilon=eps_prv, delta=delta, releases=len(releases), method="prv")
    return Spent(epsilon=eps_sum, delta=delta, releases=len(releases), method="basic")
