"""Specs a stranger sends (a consumer's query, a publisher's manifest) that no release explains.

Each must be INVALID_ARGUMENT before it reaches the ranking: values outside float32, a norm
that the clip radius and sigma cannot produce (1e30 everywhere; -3.4e38 used to crash the
mixture search), a sigma so large that sigma^2 * D overflowed, and a claimed sigma larger than
the noise the vector carries (it used to buy the spec a bias in the ranking).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from lmdock.common.errors import InvalidArgument
from lmdock.common.profile import MAX_SIGMA
from lmdock.common.spec import EXACT, Privacy, Spec, norm_bounds, plan_release
from lmdock.server.market import Market

from tests.helpers import random_unit_rows


def spec_of(profile, values, sigma: float) -> Spec:
    privacy = EXACT if sigma == 0 else Privacy(epsilon=1.0, delta=1e-6, sigma=sigma, size_bucket=64)
    return Spec(profile.profile_id, np.asarray(values, dtype=np.float32), privacy)


def test_norm_bounds_known_values(profile) -> None:
    d, x = profile.feature_dim, math.log(2e9)
    low, high = norm_bounds(0.0, profile)
    assert low == 0.0 and high == pytest.approx(profile.clip_radius, rel=2e-5)
    low, high = norm_bounds(2.0, profile)
    assert high == pytest.approx(
        (profile.clip_radius + 2 * math.sqrt(d + 2 * math.sqrt(d * x) + 2 * x)) * (1 + 1e-5) + 1e-6
    )
    assert low == pytest.approx((2 * math.sqrt(d - 2 * math.sqrt(d * x)) - profile.clip_radius) * (1 - 1e-5))


def widest(profile):
    """The profile with the largest max_sigma any market may declare (same id: it is policy)."""
    return dataclasses.replace(profile, max_sigma=MAX_SIGMA)


def test_honest_releases_always_pass(profile) -> None:
    """Real releases (discrete Gaussian on the grid) at many noise levels, and exact specs."""
    profile = widest(profile)
    rng = np.random.default_rng(0)
    rows = random_unit_rows(rng, 64, profile.feature_dim) * profile.clip_radius
    for epsilon in (0.05, 0.5, 1.0, 4.0, 8.0):
        plan = plan_release(profile, units=64, epsilon=epsilon, delta=1e-6)
        for _ in range(20):
            plan.release(rows).spec.check_against(profile)
    spec_of(profile, rows.mean(axis=0), 0.0).check_against(profile)


@pytest.mark.parametrize(
    ("values", "sigma", "message"),
    [
        (np.full(384, 1e30), 1.0, "exceeds"),
        (np.r_[-3.4e38, np.zeros(383)], 1.0, "exceeds"),
        (np.r_[1e39, np.zeros(383)], 1.0, "within float32"),
        (np.zeros(384), 1e155, "sigma must be in"),
        (np.zeros(384), MAX_SIGMA * 2, "sigma must be in"),
        (np.full(384, 0.01), 1e3, "less noise than the sigma"),  # a lying sigma
        (np.full(384, 0.2), 0.0, "exceeds"),  # an exact spec longer than R
    ],
)
def test_specs_no_release_explains_are_refused(profile, values, sigma: float, message: str) -> None:
    profile = widest(profile)
    assert profile.feature_dim == 384
    with np.errstate(over="ignore"):  # 1e39 does not fit a float32: that is the point
        spec = spec_of(profile, values, sigma)
    with pytest.raises(InvalidArgument, match=message):
        spec.check_against(profile)


def test_a_lying_sigma_is_refused_at_search(market_for_specs, profile) -> None:
    """The claimed sigma of a query whose noise is 100x smaller never reaches the ranking."""
    rng = np.random.default_rng(1)
    honest = plan_release(profile, units=64, epsilon=1.0, delta=1e-6)
    spec = honest.release(random_unit_rows(rng, 64, profile.feature_dim)).spec
    lying = Spec(spec.profile_id, spec.values / 100, spec.privacy)
    market_for_specs.search(spec)
    for bad in (lying, spec_of(profile, np.full(384, 1e30), spec.privacy.sigma)):
        with pytest.raises(InvalidArgument):
            market_for_specs.search(bad, mixture=True)


@pytest.fixture()
def market_for_specs(tmp_path, profile):
    market = Market.open(tmp_path / "m", profile=profile)
    yield market
    market.close()


def test_orphan_blobs_are_removed_on_start(tmp_path, profile) -> None:
    """A market killed between a blob and its row leaves bytes nothing lists: gone on restart."""
    Market.open(tmp_path / "m", profile=profile).close()
    orphan = tmp_path / "m" / "blobs" / "ab" / ("c" * 62)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half an upload")
    Market.open(tmp_path / "m", profile=profile).close()
    assert not orphan.exists()
