"""Kernel-mean specifications and their differentially private release.

Spec of a data set X = {x_1..x_n} under a feature map phi with ||phi(x)|| <= R:

    mu(X) = (1/n) sum_i phi(x_i)

Neighbouring data sets (replace-one) have the same size n and differ in one record, so

    ||mu(X) - mu(X')|| = ||phi(x_j) - phi(x'_j)|| / n <= 2R / n            (L2 sensitivity)

With a person column, each row is the mean of one person's feature rows (still of norm <= R)
and n counts persons: replacing one person's records moves the mean by at most 2R / n too.

The release snaps mu to a public grid g and adds discrete Gaussian noise (see `noise`):

    release(X) = g * (round(mu / g) + K),  K ~ N_Z(0, (sigma / g)^2)^D

Rounding moves each neighbour by at most g/2 per coordinate, so the sensitivity used is
Delta = 2R / b + g * sqrt(D), where b <= n is the public *size bucket* of n (the only thing
about n that sigma reveals). sigma is the analytic-Gaussian calibration (Balle & Wang 2018) of
(epsilon, delta') for Delta, with delta' = delta - (1 + e^epsilon) * tv paying for the total
variation tv between the sampled noise and the rounded continuous Gaussian (see `noise`). The
grid g = 2^(floor(log2 sigma_0) - 20), with sigma_0 the calibration for 2R / b alone, depends
on public parameters only and keeps s = sigma / g in [2^20, 2^21.1), where that distance is
negligible (at most D * (2^-44 + 0.1 * 2^-40)).

All of that depends on public parameters only, so `plan_release` fixes it from the profile and
the number of units before any data is embedded; the plan's `cost` is what a ledger checks,
and the `SpecRelease` it makes carries the same cost to be booked.

Distances: the market's distance to learnware l is d_l = ||s - mu_l||^2 - sigma^2 D - sigma_l^2 D.
E||mu + z - mu_l||^2 = ||mu - mu_l||^2 + sigma^2 D, so subtracting the known noise energy makes
d_l an unbiased estimate of the squared MMD between the two data sets' feature means. It ranks
by d_l plus its uncertainty (`ranking`), and accepts no spec noisier than the profile's max_sigma.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from lmdock.common.accounting import Release, check_delta
from lmdock.common.calibration import validate_privacy
from lmdock.common.errors import InvalidArgument
from lmdock.common.mechanism import Calibration, add_noise, calibrate
from lmdock.common.noise import UniformSource, os_uniform
from lmdock.common.profile import SPEC_VERSION, SpecProfile

__all__ = [
    "MIN_RECORDS",
    "ComparedProfile",
    "Privacy",
    "ReleasePlan",
    "Spec",
    "SpecRelease",
    "debiased_sq_distance",
    "exact_spec",
    "kernel_mean",
    "person_means",
    "plan_release",
    "release",
    "size_bucket",
]

#: Below this many records (or persons) the noise needed drowns any signal.
MIN_RECORDS = 20

#: Privacy units: one text, or one person (all of that person's texts).
UNITS = ("record", "person")

FloatArray = npt.NDArray[np.float64]


class ComparedProfile(Protocol):
    """What checking, indexing and ranking a spec read of its profile: a kernel-mean
    `SpecProfile`, or a served task-vector profile (`lmdock.common.task_vector_search`)."""

    @property
    def profile_id(self) -> str: ...
    @property
    def ids(self) -> tuple[str, ...]: ...
    @property
    def version(self) -> int: ...
    @property
    def kernel(self) -> str: ...
    @property
    def feature_dim(self) -> int: ...
    @property
    def clip_radius(self) -> float: ...  # the largest norm of an un-noised spec
    @property
    def max_sigma(self) -> float: ...
    @property
    def offset(self) -> tuple[float, ...]: ...  # added to every spec before comparing (`ranking`)


@dataclass(frozen=True)
class Privacy:
    """The parameters a spec was released under; epsilon is None (and sigma 0) when exact."""

    epsilon: float | None
    delta: float
    sigma: float
    size_bucket: int
    neighbouring: str = "replace-one"
    unit: str = "record"

    @property
    def is_private(self) -> bool:
        return self.sigma > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Privacy:
        try:
            eps = data.get("epsilon")
            privacy = cls(
                epsilon=None if eps is None else float(eps),
                delta=float(data["delta"]),
                sigma=float(data["sigma"]),
                size_bucket=int(data["size_bucket"]),
                neighbouring=str(data.get("neighbouring", "replace-one")),
                unit=str(data.get("unit", "record")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgument(f"malformed privacy parameters: {exc}") from None
        if not (math.isfinite(privacy.sigma) and privacy.sigma >= 0):
            raise InvalidArgument("sigma must be finite and >= 0")
        if (privacy.epsilon is None) != (privacy.sigma == 0):
            raise InvalidArgument("a spec has either noise (sigma > 0, epsilon set) or neither")
        if privacy.unit not in UNITS or privacy.neighbouring != "replace-one":
            raise InvalidArgument(
                f"unknown privacy unit {privacy.unit!r} or neighbouring relation {privacy.neighbouring!r}"
            )
        return privacy


EXACT = Privacy(epsilon=None, delta=0.0, sigma=0.0, size_bucket=0)


@dataclass(frozen=True, eq=False)
class Spec:
    profile_id: str
    values: npt.NDArray[np.float32]
    privacy: Privacy
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "profile_id": self.profile_id,
            "values": [float(v) for v in self.values],
            "privacy": self.privacy.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Spec:
        try:
            values = np.asarray([float(v) for v in data["values"]], dtype=np.float32)
            return cls(
                profile_id=str(data["profile_id"]),
                values=values,
                privacy=Privacy.from_dict(data["privacy"]),
                version=int(data.get("version", SPEC_VERSION)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgument(f"malformed spec: {exc}") from None

    def check_against(self, profile: ComparedProfile) -> None:
        """Raise InvalidArgument unless this spec was computed under `profile`."""
        if self.version != profile.version:
            raise InvalidArgument(f"spec version {self.version} != profile version {profile.version}")
        if self.profile_id not in profile.ids:
            raise InvalidArgument(
                f"spec was computed under profile {self.profile_id!r}, the market uses "
                f"{profile.profile_id!r}; fetch the current profile and recompute"
            )
        if self.values.shape != (profile.feature_dim,):
            raise InvalidArgument(
                f"spec has {self.values.size} values, the profile's dimension is {profile.feature_dim}"
            )
        if not np.all(np.isfinite(self.values)):
            raise InvalidArgument("spec values must be finite (and within float32)")
        check_norm(float(np.linalg.norm(self.values.astype(np.float64))), self.privacy.sigma, profile)


#: Each norm bound below fails for an honest spec with probability at most e^-x: 1e-9 for both.
_TAIL_X = math.log(2e9)


def norm_bounds(sigma: float, profile: ComparedProfile) -> tuple[float, float]:
    """The range of ||s|| for s = mu + z, ||mu|| <= R, z ~ N(0, sigma^2 I_D), except w.p. 1e-9.

    ||mu|| - ||z|| <= ||s|| <= ||mu|| + ||z||, and by Laurent & Massart (2000, Lemma 1), with
    x = ln(2e9): D - 2 sqrt(D x) <= ||z||^2 / sigma^2 <= D + 2 sqrt(D x) + 2x, each except with
    probability e^-x. The grid's rounding (<= g/2 per coordinate, g <= sigma * 2^-20) and
    float32 storage are covered by a relative slack of 1e-5.
    """
    dim, radius = profile.feature_dim, profile.clip_radius
    spread = 2 * math.sqrt(dim * _TAIL_X)
    high = radius + sigma * math.sqrt(dim + spread + 2 * _TAIL_X)
    low = sigma * math.sqrt(max(dim - spread, 0.0)) - radius
    return max(low, 0.0) * (1 - 1e-5), high * (1 + 1e-5) + 1e-6


def check_norm(norm: float, sigma: float, profile: ComparedProfile) -> None:
    """Refuse a spec noisier than the profile allows, or whose norm its sigma cannot explain
    (see `norm_bounds`).

    Too long: its values lie outside what R and sigma allow. Too short: the claimed sigma is
    larger than the noise it carries, which would buy it a bias in the market's ranking.
    """
    if not (math.isfinite(sigma) and 0 <= sigma <= profile.max_sigma):
        raise InvalidArgument(
            f"spec sigma must be in [0, {profile.max_sigma:.4g}] (the profile's max_sigma: noisier "
            f"specs carry no ranking information), got {sigma!r}"
        )
    low, high = norm_bounds(sigma, profile)
    if norm > high:
        raise InvalidArgument(
            f"spec norm {norm:.4g} exceeds {high:.4g}, the most that clip radius "
            f"{profile.clip_radius:g} and sigma {sigma:.4g} allow"
        )
    if norm < low:
        raise InvalidArgument(
            f"spec norm {norm:.4g} is below {low:.4g}: it carries less noise than the sigma "
            f"{sigma:.4g} it claims"
        )


def kernel_mean(features: npt.ArrayLike) -> FloatArray:
    """mu = mean of the rows of `features` (n x D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0:
        raise InvalidArgument("features must be a non-empty 2-D array")
    mean: FloatArray = f.mean(axis=0)
    return mean


def size_bucket(n: int) -> int:
    """Largest m * 2^k <= n with 8 <= m <= 15: n rounded down to 3 significant bits.

    Calibrating to the bucket instead of n costs at most 12.5% more noise and discloses n only
    to within 12.5%.
    """
    if n < 1:
        raise ValueError("n must be positive")
    if n < 16:
        return n
    shift = n.bit_length() - 4
    return (n >> shift) << shift


def person_means(features: npt.ArrayLike, persons: Sequence[str]) -> FloatArray:
    """One row per person (in order of first appearance): the mean of that person's rows.

    A mean of rows of norm <= R has norm <= R, so the rows stay inside the clip ball and the
    release's sensitivity is 2R / (number of persons) for replacing one person's records.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != len(persons):
        raise InvalidArgument("need one person id per feature row")
    index: dict[str, int] = {}
    owner = np.array([index.setdefault(p, len(index)) for p in persons], dtype=np.int64)
    sums = np.zeros((len(index), f.shape[1]))
    np.add.at(sums, owner, f)
    means: FloatArray = sums / np.bincount(owner)[:, None]
    return means


@dataclass(frozen=True)
class SpecRelease:
    """A released spec and what it cost: the privacy ledger books `cost` as it is."""

    spec: Spec
    cost: Release


@dataclass(frozen=True)
class ReleasePlan:
    """A spec release fixed from public parameters before any data is embedded: the cost a
    ledger checks is the calibration the noise then follows."""

    profile: SpecProfile
    unit: str
    size_bucket: int
    calibration: Calibration

    @property
    def cost(self) -> Release:
        return self.calibration.cost

    def release(self, features: npt.ArrayLike, *, uniform: UniformSource = os_uniform) -> SpecRelease:
        """Release the kernel mean of `features` (rows = privacy units, as many as planned).

        Each row must already satisfy ||row|| <= profile.clip_radius (the feature map ensures
        it; a person-level row is the mean of that person's feature rows, which keeps the bound).
        """
        f = np.asarray(features, dtype=np.float64)
        n = f.shape[0] if f.ndim == 2 else 0
        if n == 0 or size_bucket(n) != self.size_bucket:
            raise InvalidArgument(
                f"the release was planned for size bucket {self.size_bucket}, not {n} {self.unit}s"
            )
        if f.shape[1] != self.profile.feature_dim:
            raise InvalidArgument(
                f"features have {f.shape[1]} dims, the profile has {self.profile.feature_dim}"
            )
        if np.any(np.linalg.norm(f, axis=1) > self.profile.clip_radius * (1 + 1e-9)):
            raise ValueError("feature rows exceed the clip radius: apply the profile's feature map")
        cal = self.calibration
        values = add_noise(kernel_mean(f), cal, uniform=uniform).astype(np.float32)
        privacy = Privacy(
            epsilon=cal.epsilon,
            delta=cal.delta,
            sigma=cal.sigma,
            size_bucket=self.size_bucket,
            unit=self.unit,
        )
        return SpecRelease(
            Spec(profile_id=self.profile.profile_id, values=values, privacy=privacy), self.cost
        )


def plan_release(
    profile: SpecProfile, *, epsilon: float, delta: float, units: int, unit: str = "record"
) -> ReleasePlan:
    """Calibrate an (epsilon, delta)-DP release of the kernel mean of `units` privacy units."""
    validate_privacy(epsilon=epsilon, delta=delta)
    if unit not in UNITS:
        raise InvalidArgument(f"privacy unit must be one of {UNITS}, got {unit!r}")
    if units < MIN_RECORDS:
        raise InvalidArgument(f"a private spec needs at least {MIN_RECORDS} {unit}s, got {units}")
    check_delta(delta, n=units, what="a spec")
    bucket = size_bucket(units)
    calibration = calibrate(
        epsilon=epsilon, delta=delta, clip_radius=profile.clip_radius, bucket=bucket, dim=profile.feature_dim
    )
    if calibration.sigma > profile.max_sigma:  # refused here, before a ledger books anything
        raise InvalidArgument(
            f"epsilon={epsilon:g} over {units} {unit}s needs noise sigma={calibration.sigma:.4g}, above the "
            f"market profile's max_sigma {profile.max_sigma:.4g} (a spec that noisy carries no ranking "
            "information): use a larger epsilon or more records"
        )
    return ReleasePlan(profile=profile, unit=unit, size_bucket=bucket, calibration=calibration)


def release(
    features: npt.ArrayLike,
    profile: SpecProfile,
    *,
    epsilon: float,
    delta: float,
    unit: str = "record",
    uniform: UniformSource = os_uniform,
) -> SpecRelease:
    """Release the kernel mean of `features` (rows = privacy units) with (epsilon, delta)-DP:
    `plan_release` for their number, then `ReleasePlan.release`."""
    f = np.asarray(features, dtype=np.float64)
    n = f.shape[0] if f.ndim == 2 else 0
    plan = plan_release(profile, epsilon=epsilon, delta=delta, units=n, unit=unit)
    return plan.release(f, uniform=uniform)


def exact_spec(features: npt.ArrayLike, profile: SpecProfile) -> Spec:
    """The un-noised kernel mean: for a publisher who chooses to disclose it (sigma = 0)."""
    values = kernel_mean(features).astype(np.float32)
    return Spec(profile_id=profile.profile_id, values=values, privacy=EXACT)


def debiased_sq_distance(
    query: Spec, candidates: npt.NDArray[np.float32], candidate_sigmas: npt.NDArray[np.float64]
) -> FloatArray:
    """d_l = ||s - mu_l||^2 - (sigma^2 + sigma_l^2) D for each row mu_l of `candidates`."""
    s = query.values.astype(np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    raw = np.sum((c - s) ** 2, axis=1)
    dim = s.shape[0]
    debiased: FloatArray = raw - (query.privacy.sigma**2 + np.asarray(candidate_sigmas) ** 2) * dim
    return debiased
