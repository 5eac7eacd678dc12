"""The spec of several sites' data from each site's own DP spec: their count-weighted mean.

With site i holding n_i records and releasing s_i = mu_i + z_i, z_i ~ N(0, sigma_i^2 I) (lmdock's
discrete Gaussian on a fine grid), the data's kernel mean is mu = sum_i (n_i / N) mu_i, N = sum n_i,
and

    s = sum_i (n_i / N) s_i = mu + z,   z ~ N(0, sigma^2 I),   sigma^2 = sum_i (n_i / N)^2 sigma_i^2

so s is a spec of the union whose noise the market can account for like any other. It is
post-processing of the sites' releases: each record is in one site, so the joint spec is
(max_i epsilon_i, max_i delta_i)-DP per record (parallel composition), against everyone,
the aggregator included. Its size bucket is that of N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from lmdock.common.errors import InvalidArgument
from lmdock.common.spec import Privacy, Spec, size_bucket

__all__ = ["weighted_mean"]


def weighted_mean(specs: Sequence[tuple[Spec, int]]) -> Spec:
    """The count-weighted mean of (spec, records) pairs of one profile (module docstring)."""
    if not specs:
        raise InvalidArgument("a joint spec needs at least one site's spec")
    profiles = {s.profile_id for s, _ in specs}
    if len(profiles) != 1 or any(n < 1 for _, n in specs) or any(not s.privacy.is_private for s, _ in specs):
        raise InvalidArgument(
            "the sites' specs must be private, of one profile, over at least one record each"
        )
    total = sum(n for _, n in specs)
    weights = [n / total for _, n in specs]
    values = sum(w * s.values.astype(np.float64) for (s, _), w in zip(specs, weights, strict=True))
    sigma = math.sqrt(math.fsum((w * s.privacy.sigma) ** 2 for (s, _), w in zip(specs, weights, strict=True)))
    privacy = Privacy(
        epsilon=max(float(s.privacy.epsilon or 0.0) for s, _ in specs),
        delta=max(s.privacy.delta for s, _ in specs),
        sigma=sigma,
        size_bucket=size_bucket(total),
        unit=specs[0][0].privacy.unit,
    )
    return Spec(profile_id=profiles.pop(), values=np.asarray(values, dtype=np.float32), privacy=privacy)
