"""What a data set's releases cost together, for replace-one neighbours (one stated relation).

Every release (a spec, a DP-SGD training run) is a possibly subsampled, repeated Gaussian
mechanism: a noise multiplier z, a sample rate q (Poisson sampling; 1 = every record) and a
number of steps, together with the (epsilon_i, delta_i) it was calibrated to and the total
variation tv_i by which its implementation may differ from that ideal mechanism. lmdock's
neighbouring relation is **replace-one** (two data sets of the same size differing in one
unit; docs/privacy.md). What z is relative to depends on how the release was calibrated:

* `sensitivity="replace-one"` (specs): z = sigma / Delta, Delta the largest distance between
  the outputs' means for replace-one neighbours.
* `sensitivity="add-remove"` (DP-SGD, as Opacus records it): z = sigma / C, C the largest
  contribution of one record (the clipping norm). Replacing a record moves the clipped sum by
  up to 2C: per step the pair of outputs is dominated by
      P = (1 - q) N(0, z^2) + q N(+1, z^2),   Q = (1 - q) N(0, z^2) + q N(-1, z^2)
  (Poisson subsampling under substitution: Zhu, Dong & Wang, AISTATS 2022), which
  dp_accounting's PLD accountant composes exactly (`NeighboringRelation.REPLACE_ONE`).

In dp_accounting's convention a record moves the output by 2 units under replace-one, so a
replace-one-calibrated release enters with multiplier 2z and an add-remove one with z. The
releases i = 1..k of one data set are booked at a target delta (the budget's):

    eps_sum = sum_i epsilon_i           if sum_i delta_i <= delta, else infinity   (basic)
    eps_M   = M(z_i, q_i, steps_i; delta - (1 + e^G) sum_i tv_i), kept if <= G
    epsilon = min(eps_sum, eps_M)

where G is a guess at the composed epsilon: M(z_i, q_i, steps_i; delta) + 0.1, raised if the
answer exceeds it, and M is the epsilon of the composed ideal mechanisms at a delta:

* every q_i = 1 (specs, full-batch training): the composition of Gaussian mechanisms is
  exactly one Gaussian mechanism, mu-GDP with mu^2 = sum_i steps_i (2 / z_i)^2 (z_i in
  dp_accounting's convention below; Dong, Roth & Su 2022, Cor. 3.3), whose epsilon at delta is
  the smallest with Phi(mu/2 - epsilon/mu) - e^epsilon Phi(-mu/2 - epsilon/mu) <= delta (the
  analytic Gaussian's curve, `calibration.analytic_delta`), found by bisection ("gaussian");
* otherwise dp_accounting's PLD accountant ("pld").

The TV term is paid at the composed epsilon, not at e^(sum epsilon_i), which would book ten
epsilon = 1 specs at 3.346 (exact 3.140) and the eleventh at infinity. All are valid
(epsilon, delta) guarantees for replace-one neighbours, so their minimum is too. Basic
composition: each release is (epsilon_i, delta_i)-DP as implemented, so k of them are
(sum epsilon_i, sum delta_i)-DP; this needs each DP-SGD release's epsilon_i to be its
replace-one epsilon (`dp_sgd_noise_multiplier` calibrates it so). GDP: the composed ideal
Gaussians are exactly the mu-Gaussian, and the bisection rounds up. PLD: the pessimistic
privacy loss distribution (Koskela et al. 2020; Doroshenko et al. 2022, "connect the dots")
bounds the epsilon of the composed ideal mechanisms from above at the delta it is given; the
implemented releases are within TV sum tv_i of them, which costs (1 + e^G) sum tv_i of delta.

Known values (tests/test_accounting.py): an analytically calibrated epsilon = 1, delta = 1e-6
spec books exactly 1 (basic; the exact composition agrees); two of them 1.455 at delta = 1e-6, five 2.124 at
1e-5; Opacus' PRV accountant gave 1.010, 1.465 and 2.134. Booking at a fixed delta keeps the
booked epsilon from ever going down when a release is added.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lmdock.common.calibration import analytic_delta, validate_privacy
from lmdock.common.errors import InvalidArgument

__all__ = [
    "SENSITIVITIES",
    "Budget",
    "Release",
    "Spent",
    "check_delta",
    "compose",
    "composed_epsilon",
    "dp_sgd_noise_multiplier",
    "max_delta",
]

#: What a release's noise multiplier is relative to (module docstring).
SENSITIVITIES = ("replace-one", "add-remove")
#: Width of the privacy-loss grid; the pessimistic PLD stays an upper bound at any width, and
#: at this one it is within 1e-4 of the 1e-4 grid on the values above (50 ms per run).
PLD_DISCRETIZATION = 1e-3
#: dp_sgd_noise_multiplier's answer is at most this much (relative) above the smallest z.
NOISE_TOLERANCE = 1e-3
#: How far above the composed epsilon at delta the TV term is paid (`_epsilon_with_tv`): e^0.1 = 1.1,
#: so the TV costs at most 10 % more than at the exact composed epsilon.
TV_GUESS_MARGIN = 0.1
#: `_gaussian_epsilon`'s answer is at most this much (relative, or absolute below 1) above the exact one.
GAUSSIAN_TOLERANCE = 1e-9
#: The largest delta any release or budget may have, whatever n (`max_delta`).
DELTA_CEILING = 1e-6


def max_delta(n: int) -> float:
    """The largest delta a release over n privacy units (or a budget for n records) may have:
    min(1e-6, 1 / (10 n)). delta <= 1/n alone admits a mechanism that publishes one random
    unit in full (delta = 1/n of it leaks); a tenth of that, and never above 1e-6, keeps delta
    far below the chance of any one unit being exposed (docs/privacy.md, "the delta policy")."""
    if not (isinstance(n, int) and n >= 1):
        raise InvalidArgument(f"the number of privacy units must be a positive integer, got {n!r}")
    return min(DELTA_CEILING, 1.0 / (10 * n))


def check_delta(delta: float, *, n: int, what: str = "a release") -> None:
    """InvalidArgument naming the limit unless delta <= max_delta(n)."""
    limit = max_delta(n)
    if delta > limit:
        raise InvalidArgument(
            f"delta={delta:g} is above the limit for {what} over {n} privacy units: "
            f"delta <= min(1e-6, 1/(10 n)) = {limit:g}"
        )


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
    sensitivity: str = "replace-one"

    def __post_init__(self) -> None:
        validate_privacy(epsilon=self.epsilon, delta=self.delta)
        _positive("noise_multiplier", self.noise_multiplier)
        _positive("tv_slack", self.tv_slack, allow_zero=True)
        if not (0 < self.sample_rate <= 1):
            raise InvalidArgument(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise InvalidArgument(f"steps must be a positive integer, got {self.steps!r}")
        if self.sensitivity not in SENSITIVITIES:
            raise InvalidArgument(f"sensitivity must be one of {SENSITIVITIES}, got {self.sensitivity!r}")

    @property
    def replace_one_multiplier(self) -> float:
        """The noise multiplier in dp_accounting's replace-one convention (one record = 2 units)."""
        return 2.0 * self.noise_multiplier if self.sensitivity == "replace-one" else self.noise_multiplier

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "tv_slack": self.tv_slack,
            "sensitivity": self.sensitivity,
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
                sensitivity=str(data.get("sensitivity", "replace-one")),
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
        if self.delta > DELTA_CEILING:
            raise InvalidArgument(
                f"a budget's delta={self.delta:g} is above the limit delta <= min(1e-6, 1/(10 n)) "
                f"(at most {DELTA_CEILING:g} for any n)"
            )


@dataclass(frozen=True)
class Spent:
    """The composed guarantee of a data set's releases: (epsilon, delta)-DP at the target delta."""

    epsilon: float
    delta: float
    releases: int
    method: str  # "none", "basic", "gaussian" or "pld": which bound gave epsilon

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


def _gaussian_mu(releases: Sequence[Release]) -> float | None:
    """mu of the one Gaussian mechanism that `releases` compose into exactly, or None when any
    is subsampled (module docstring: mu^2 = sum_i steps_i (2 / z_i)^2, z_i replace-one)."""
    if any(r.sample_rate != 1 for r in releases):
        return None
    return math.sqrt(math.fsum(r.steps * (2.0 / r.replace_one_multiplier) ** 2 for r in releases))


def _gaussian_epsilon(mu: float, delta: float) -> float:
    """The exact epsilon of mu-GDP at `delta`: the smallest epsilon with
    Phi(mu/2 - epsilon/mu) - e^epsilon Phi(-mu/2 - epsilon/mu) <= delta, by bisection, rounded up."""

    def ok(epsilon: float) -> bool:
        return analytic_delta(sigma=1.0 / mu, sensitivity=1.0, epsilon=epsilon) <= delta

    if ok(0.0):
        return 0.0
    hi = 1.0
    while not ok(hi):
        hi *= 2.0
        if hi > 512:  # far past any budget (epsilon <= 100), and e^epsilon stays a float
            return math.inf
    lo = 0.0
    while hi - lo > GAUSSIAN_TOLERANCE * max(hi, 1.0):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _epsilon_curve(releases: Sequence[Release]) -> Callable[[float], float]:
    """delta -> the epsilon of the composed ideal mechanisms: exact when every release is a plain
    Gaussian (specs), else dp_accounting's pessimistic PLD (module docstring). The exact path
    also keeps SciPy, which dp_accounting imports (1.9 s), off a search's path."""
    mu = _gaussian_mu(releases)
    if mu is not None:
        exact_mu = mu
        return lambda delta: _gaussian_epsilon(exact_mu, delta) if 0 < delta < 1 else math.inf
    accountant = _pld(releases)
    return lambda delta: _pld_epsilon_at(accountant, delta)


def _pld(releases: Sequence[Release]) -> Any:
    """dp_accounting's PLD accountant with `releases` composed (replace-one; module docstring)."""
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    steps: Counter[tuple[float, float]] = Counter()
    for r in releases:
        steps[(r.replace_one_multiplier, r.sample_rate)] += r.steps
    accountant = PLDAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE,
        value_discretization_interval=PLD_DISCRETIZATION,
    )
    for (z, q), count in steps.items():
        event = dp_accounting.GaussianDpEvent(z)
        accountant.compose(event if q == 1 else dp_accounting.PoissonSampledDpEvent(q, event), count)
    return accountant


def _pld_epsilon_at(accountant: Any, delta: float) -> float:
    if not 0 < delta < 1:
        return math.inf
    try:
        return float(accountant.get_epsilon(delta))
    except (ValueError, ArithmeticError):  # outside the accountant's numerical range
        return math.inf


def composed_epsilon(releases: Sequence[Release], *, delta: float) -> float:
    """An upper bound on the replace-one epsilon of the composed ideal mechanisms at `delta`:
    exact for plain Gaussians, dp_accounting's pessimistic PLD otherwise (module docstring);
    infinity outside the numerical range."""
    if not releases:
        return 0.0
    return _epsilon_curve(releases)(delta)


def _epsilon_with_tv(releases: Sequence[Release], *, delta: float, tv: float) -> float:
    """The epsilon of the implemented releases, paying their TV at the composed epsilon.

    The implementation is within TV `tv` of the ideal composition M; if M is (e, d')-DP, the
    implementation is (e, d' + (1 + e^e) tv)-DP. So for any guess G >= e, querying M at
    d' = delta - (1 + e^G) tv gives a valid e. The guess starts just above M's epsilon at delta
    itself (a lower bound on the answer), not at sum(epsilon_i): e^(sum epsilon_i) outgrows
    delta after about ten releases and would book infinity.
    """
    epsilon_at = _epsilon_curve(releases)
    floor = epsilon_at(delta)
    guess = floor + TV_GUESS_MARGIN
    for _ in range(3):
        if not math.isfinite(guess):
            return math.inf
        candidate = epsilon_at(delta - (1.0 + math.exp(min(guess, 700.0))) * tv)
        if candidate <= guess:
            return candidate
        guess = candidate + TV_GUESS_MARGIN
    return math.inf


def compose(releases: Sequence[Release], *, delta: float) -> Spent:
    """The epsilon at which `releases` together are (epsilon, delta)-DP (module docstring)."""
    validate_privacy(epsilon=1.0, delta=delta)
    if not releases:
        return Spent(epsilon=0.0, delta=delta, releases=0, method="none")
    total = math.fsum(r.epsilon for r in releases)
    deltas_fit = math.fsum(r.delta for r in releases) <= delta * (1 + 1e-12)  # float sums of equal deltas
    eps_sum = total if deltas_fit else math.inf
    eps_composed = _epsilon_with_tv(releases, delta=delta, tv=math.fsum(r.tv_slack for r in releases))
    if eps_composed < eps_sum:
        method = "gaussian" if _gaussian_mu(releases) is not None else "pld"
        return Spent(epsilon=eps_composed, delta=delta, releases=len(releases), method=method)
    return Spent(epsilon=eps_sum, delta=delta, releases=len(releases), method="basic")


def dp_sgd_noise_multiplier(*, epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest z (to NOISE_TOLERANCE) at which `steps` Poisson-sampled Gaussian steps at
    `sample_rate`, z relative to one record's clipped contribution, are (epsilon, delta)-DP for
    replace-one neighbours (by `composed_epsilon`); bisection on log z."""
    validate_privacy(epsilon=epsilon, delta=delta)

    def spent(z: float) -> float:
        release = Release(
            epsilon=epsilon,
            delta=delta,
            noise_multiplier=z,
            sample_rate=sample_rate,
            steps=steps,
            sensitivity="add-remove",
        )
        return composed_epsilon([release], delta=delta)

    hi = 1.0
    while spent(hi) > epsilon:
        hi *= 2.0
        if hi > 1e6:
            raise InvalidArgument(f"no noise level reaches epsilon={epsilon:g} at delta={delta:g}")
    lo = hi / 2.0
    while spent(lo) <= epsilon and lo > 1e-3:
        hi, lo = lo, lo / 2.0
    while hi / lo > 1 + NOISE_TOLERANCE:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if spent(mid) <= epsilon else (mid, hi)
    return hi
