import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lmdock.common.calibration import analytic_sigma
from lmdock.common.errors import InvalidArgument, ProfileMismatch
from lmdock.common.features import build_feature_map
from lmdock.common.mechanism import calibrate
from lmdock.common.noise import SAMPLER_TV_PER_COORD, rounding_tv
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import (
    MIN_RECORDS,
    Spec,
    debiased_sq_distance,
    exact_spec,
    person_means,
    release,
    size_bucket,
)

from tests.helpers import random_unit_rows

FAKE_HASH = "0" * 64


def linear_profile(**kw):
    return make_profile(embedder_hash=FAKE_HASH, **kw)


def test_linear_features_are_unit_norm(rng) -> None:
    fmap = build_feature_map(linear_profile())
    e = random_unit_rows(rng, 50, 384)
    assert np.allclose(np.linalg.norm(fmap(e), axis=1), 1.0)


def test_rbf_features_are_unit_norm_and_approximate_the_kernel(rng) -> None:
    gamma = 0.5
    profile = linear_profile(kernel="rbf", feature_dim=8192, bandwidth=gamma, seed=11)
    fmap = build_feature_map(profile)
    e = random_unit_rows(rng, 20, 384)
    phi = fmap(e)
    assert np.allclose(np.linalg.norm(phi, axis=1), 1.0)
    exact = np.exp(-gamma * np.sum((e[:, None] - e[None]) ** 2, axis=-1))
    assert np.abs(phi @ phi.T - exact).max() < 0.05


def test_centring_and_clipping_bound_the_norm(rng) -> None:
    centre = rng.standard_normal(384) * 0.05
    profile = linear_profile(centre=centre, clip_radius=0.5)
    phi = build_feature_map(profile)(random_unit_rows(rng, 100, 384))
    assert np.linalg.norm(phi, axis=1).max() <= 0.5 + 1e-9


def test_unreproducible_feature_map_is_refused() -> None:
    profile = linear_profile(kernel="rbf", feature_dim=64, bandwidth=1.0)
    forged = type(profile)(**{**profile.__dict__, "feature_map_sha256": "f" * 64})
    with pytest.raises(ProfileMismatch):
        build_feature_map(forged)


@given(st.integers(min_value=1, max_value=10**9))
def test_size_bucket_is_a_close_lower_bound(n: int) -> None:
    b = size_bucket(n)
    assert 1 <= b <= n
    assert b > n * 7 / 8 - 1


def test_size_bucket_known_values() -> None:
    assert [size_bucket(n) for n in (15, 16, 17, 100, 300, 1000)] == [15, 16, 16, 96, 288, 960]


def test_release_noise_matches_the_formula(rng) -> None:
    profile = linear_profile()
    features = build_feature_map(profile)(random_unit_rows(rng, 300, 384))
    spec = release(features, profile, epsilon=1.0, delta=1e-6).spec
    bucket = size_bucket(300)
    # recomputed by hand from the formula in lmdock.common.mechanism
    sigma_0 = analytic_sigma(epsilon=1.0, delta=1e-6, sensitivity=2.0 / bucket)
    grid = 2.0 ** (math.floor(math.log2(sigma_0)) - 20)
    tv = 384 * (SAMPLER_TV_PER_COORD + rounding_tv(sigma_0 / grid))
    sensitivity = 2.0 / bucket + grid * math.sqrt(384)
    expected = analytic_sigma(epsilon=1.0, delta=1e-6 - (1 + math.e) * tv, sensitivity=sensitivity)
    assert spec.privacy.sigma == pytest.approx(expected, rel=1e-12)
    assert spec.privacy.epsilon == 1.0 and spec.privacy.delta == 1e-6 and spec.privacy.size_bucket == bucket
    # the grid and the TV slack cost next to nothing: sigma is the plain analytic one to 2e-4
    plain = analytic_sigma(epsilon=1.0, delta=1e-6, sensitivity=2.0 / bucket)
    assert spec.privacy.sigma == pytest.approx(plain, rel=2e-4)
    # the empirical noise over many releases has the calibrated standard deviation
    mean = features.mean(axis=0)
    noise = np.concatenate(
        [release(features, profile, epsilon=1.0, delta=1e-6).spec.values - mean for _ in range(40)]
    )
    assert noise.std() == pytest.approx(spec.privacy.sigma, rel=0.03)
    assert abs(noise.mean()) < 4 * spec.privacy.sigma / math.sqrt(noise.size)


def test_release_values_lie_on_the_public_grid(rng) -> None:
    profile = linear_profile()
    features = build_feature_map(profile)(random_unit_rows(rng, 40, 384))
    spec = release(features, profile, epsilon=2.0, delta=1e-6).spec
    grid = calibrate(epsilon=2.0, delta=1e-6, clip_radius=1.0, bucket=size_bucket(40), dim=384).grid
    steps = spec.values.astype(np.float64) / grid
    # float32 keeps 24 bits of each multiple of the grid: within 2^-23 relative of an integer
    assert np.all(np.abs(steps - np.round(steps)) <= np.abs(steps) * 2.0**-23 + 1e-9)


def test_person_means_bound_each_person_to_one_row(rng) -> None:
    rows = random_unit_rows(rng, 6, 8)
    persons = ["a", "b", "a", "c", "b", "a"]
    means = person_means(rows, persons)
    assert means.shape == (3, 8)
    assert np.allclose(means[0], rows[[0, 2, 5]].mean(axis=0))
    assert np.allclose(means[2], rows[3])
    assert np.all(np.linalg.norm(means, axis=1) <= 1 + 1e-12)
    with pytest.raises(InvalidArgument):
        person_means(rows, persons[:5])


def test_unknown_privacy_unit_is_refused(rng) -> None:
    profile = linear_profile()
    features = build_feature_map(profile)(random_unit_rows(rng, 30, 384))
    with pytest.raises(InvalidArgument, match="unit"):
        release(features, profile, epsilon=1.0, delta=1e-6, unit="household")
    data = release(features, profile, epsilon=1.0, delta=1e-6, unit="person").spec.to_dict()
    assert Spec.from_dict(data).privacy.unit == "person"
    data["privacy"]["unit"] = "household"
    with pytest.raises(InvalidArgument, match="unit"):
        Spec.from_dict(data)


def test_too_few_records_and_unclipped_features_are_refused(rng) -> None:
    profile = linear_profile()
    with pytest.raises(InvalidArgument):
        release(random_unit_rows(rng, MIN_RECORDS - 1, 384), profile, epsilon=1.0, delta=1e-6)
    with pytest.raises(ValueError):
        release(2 * random_unit_rows(rng, 50, 384), profile, epsilon=1.0, delta=1e-6)


def test_debiased_distance_is_unbiased(rng) -> None:
    profile = linear_profile()
    fmap = build_feature_map(profile)
    user = fmap(random_unit_rows(rng, 200, 384, centre=np.full(384, 0.05)))
    other = exact_spec(fmap(random_unit_rows(rng, 200, 384, centre=np.full(384, -0.05))), profile)
    truth = float(np.sum((user.mean(0) - other.values.astype(np.float64)) ** 2))
    estimates = [
        debiased_sq_distance(
            release(user, profile, epsilon=1.0, delta=1e-6).spec, other.values[None], np.zeros(1)
        )[0]
        for _ in range(60)
    ]
    spread = np.std(estimates) / math.sqrt(len(estimates))
    assert abs(np.mean(estimates) - truth) < 4 * spread + 1e-4


def test_spec_json_round_trip(rng) -> None:
    profile = linear_profile()
    spec = release(
        build_feature_map(profile)(random_unit_rows(rng, 30, 384)), profile, epsilon=1.0, delta=1e-6
    ).spec
    again = Spec.from_dict(spec.to_dict())
    assert np.array_equal(again.values, spec.values) and again.privacy == spec.privacy
    exact = exact_spec(random_unit_rows(rng, 30, 384), profile)
    assert Spec.from_dict(exact.to_dict()).privacy.epsilon is None


def test_spec_checked_against_profile(rng) -> None:
    profile = linear_profile()
    spec = exact_spec(random_unit_rows(rng, 30, 384), profile)
    spec.check_against(profile)
    other = linear_profile(seed=5)
    with pytest.raises(InvalidArgument, match="profile"):
        spec.check_against(other)
    bad = Spec(
        profile_id=profile.profile_id, values=np.full(384, np.nan, dtype=np.float32), privacy=spec.privacy
    )
    with pytest.raises(InvalidArgument, match="finite"):
        bad.check_against(profile)
