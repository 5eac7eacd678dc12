"""The joint spec of several sites through a secure sum with distributed discrete Gaussian noise.

Each site j with records x_1..x_{n_j} holds the kernel sum S_j = sum_i phi(x_i) (||phi|| <= R).
With the grid g, the scale s and t = `shares` from the calibration of the *sum*
(`common.mechanism.calibrate_vector`, sensitivity 2R, D dimensions, t shares), site j sends

    y_j = clip(round(S_j / g), -c', c') + K_j,    K_j ~ N_Z(0, s^2 / t)^D   (OS CSPRNG)

into SecAgg+, which reveals only sum_j y_j. Replacing one record of site j moves only S_j, by at
most 2R, so the snapped, clipped term moves by at most Delta / g = 2R / g + sqrt(D) (clipping each
coordinate is 1-Lipschitz). If at least t sites' shares are in the sum and none of them colludes
with the aggregator, the sum's noise contains N_Z(0, s^2) up to TV tau (the rest is independent of
the data), so the release is (epsilon, delta)-DP per record against the aggregator and every
other site, exactly as one central release of the kernel sum calibrated to that s. Each site
books that cost in its own ledger before it sends.

Dropouts. SecAgg+ tolerates sites that drop after sharing their keys: the m >= t remaining
sites' y_j are summed; with fewer than t it stops, and nothing is revealed. The noise in the
sum is N_Z(0, m s^2 / t): at least the calibrated s whenever SecAgg+ completes, so a dropout
costs accuracy, never privacy. A site that is refused by its own ledger answers with an error,
which SecAgg+ treats as a dropout.

Integers through Flower. SecAgg+ clips every value to [-c, c], quantizes (v + c) * Q / (2c) by
stochastic rounding and sums modulo M. With Q = 2c, M = 2^32 and each site's weight equal to the
maximum weight, the quantization maps the integers y_j + c onto themselves (no rounding, no
randomness), so the sum is exact. c = 2^(30 - ceil(log2 k)) for k sites keeps y_j + c in int32
and k (2c) < 2^32. Data coordinates are clipped to c' = c - 40 s / sqrt(t), so |y_j| > c only if
a share's noise exceeds 40 of its standard deviations: probability at most 2 k D e^-800, added
to nothing (it underflows).

The joint spec is mu = g (sum_j y_j) / N with N = sum_j n_j (counts are public under replace-one)
and sigma = g s sqrt(m / t) / N, which the market's debiased ranking needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from lmdock.common.errors import InvalidArgument
from lmdock.common.mechanism import Calibration, calibrate_vector
from lmdock.common.noise import UniformSource, discrete_gaussian, os_uniform
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import Privacy, Spec, size_bucket

__all__ = ["MAX_SITES", "MODULUS", "SecureSpecPlan", "plan_secure_spec"]

#: SecAgg+ sums modulo 2^32 (the largest range Flower allows).
MODULUS = 2**32
MAX_SITES = 64
#: A share's noise stays within this many of its standard deviations (module docstring).
NOISE_MARGIN = 40


@dataclass(frozen=True)
class SecureSpecPlan:
    """A secure-sum spec release, fixed from public parameters (module docstring)."""

    profile: SpecProfile
    calibration: Calibration
    sites: int

    @property
    def clip(self) -> int:
        """c: Flower's clipping range (and half its quantization range)."""
        return 2 ** (30 - math.ceil(math.log2(self.sites)))

    @property
    def data_clip(self) -> int:
        return self.clip - math.ceil(NOISE_MARGIN * self.calibration.share_scale)

    def contribution(
        self, features: npt.ArrayLike, *, uniform: UniformSource = os_uniform
    ) -> npt.NDArray[np.int64]:
        """y_j for one site's feature rows (each of norm <= R): its snapped sum plus its share."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.profile.feature_dim:
            raise InvalidArgument(f"features must be rows of {self.profile.feature_dim} values")
        if np.any(np.linalg.norm(f, axis=1) > self.profile.clip_radius * (1 + 1e-9)):
            raise ValueError("feature rows exceed the clip radius: apply the profile's feature map")
        snapped = np.clip(np.round(f.sum(axis=0) / self.calibration.grid), -self.data_clip, self.data_clip)
        share = discrete_gaussian(self.calibration.share_scale, f.shape[1], uniform=uniform)
        return snapped.astype(np.int64) + share

    def joint_spec(self, total: npt.ArrayLike, *, records: int, contributors: int) -> Spec:
        """The spec of all contributors' records from the integer sum of their y_j."""
        if contributors < self.calibration.shares:
            raise InvalidArgument(
                f"only {contributors} sites contributed, fewer than the {self.calibration.shares} "
                "whose noise the release needs"
            )
        cal = self.calibration
        sigma = cal.grid * cal.share_scale * math.sqrt(contributors) / records
        if sigma > self.profile.max_sigma:
            raise InvalidArgument(
                f"the joint spec of {records} records would have sigma {sigma:.4g}, above the "
                f"profile's max_sigma {self.profile.max_sigma:.4g}: use a larger epsilon or more records"
            )
        values = cal.grid * np.asarray(total, dtype=np.float64) / records
        privacy = Privacy(epsilon=cal.epsilon, delta=cal.delta, sigma=sigma, size_bucket=size_bucket(records))
        return Spec(profile_id=self.profile.profile_id, values=values.astype(np.float32), privacy=privacy)


def plan_secure_spec(
    profile: SpecProfile, *, epsilon: float, delta: float, shares: int, sites: int
) -> SecureSpecPlan:
    """Calibrate the secure sum of `sites` sites' kernel sums, `shares` of whose noise it needs."""
    if not 2 <= sites <= MAX_SITES or not 1 <= shares <= sites:
        raise InvalidArgument(
            f"need 2 to {MAX_SITES} sites and 1 to {sites} noise shares, got {sites}, {shares}"
        )
    calibration = calibrate_vector(
        epsilon=epsilon,
        delta=delta,
        sensitivity=2.0 * profile.clip_radius,
        dim=profile.feature_dim,
        shares=shares,
    )
    plan = SecureSpecPlan(profile=profile, calibration=calibration, sites=sites)
    if plan.data_clip < plan.clip // 2:
        raise InvalidArgument("the noise does not fit SecAgg+'s integer range: use fewer sites")
    return plan
