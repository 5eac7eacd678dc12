"""Specs noisier than the market's profile allows, and honest but very noisy learnwares.

A publisher that really adds huge noise passes the norm check of test_hostile_specs: its
distance is then mostly noise, and ranked by the point distance it came first for about half
of all queries whatever its data. The profile's max_sigma refuses such specs (uploads over
gRPC, searches, and the client's own release before any budget is booked), and below it the
ranking's uncertainty bound keeps a noisy learnware from winning by luck.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from lmdock.client.connection import MarketClient
from lmdock.client.ledger import Ledger
from lmdock.client.spec_release import SpecBooking
from lmdock.common.canonical import canonical_json, jcs, sha256_hex
from lmdock.common.errors import InvalidArgument
from lmdock.common.mixture import explain_as_mixture
from lmdock.common.profile import MAX_SIGMA, SpecProfile, default_max_sigma
from lmdock.common.ranking import RANK_Z
from lmdock.common.signing import generate_key
from lmdock.common.spec import Spec, exact_spec, plan_release
from lmdock.server.auth import AccessPolicy
from lmdock.server.index.exact import ExactIndex
from lmdock.server.market import Market

from tests.helpers import listed, make_adapter, make_package, random_unit_rows
from tests.market_helpers import TINY_BERT, running_market, status_of


def noisy_spec(profile: SpecProfile, sigma_at_least: float, seed: int = 0) -> Spec:
    """An honest release (real noise, passes the norm check) with sigma >= `sigma_at_least`:
    epsilon lowered until the calibration gives that much noise, under a profile allowing it."""
    wide = dataclasses.replace(profile, max_sigma=MAX_SIGMA)
    rows = random_unit_rows(np.random.default_rng(seed), 64, profile.feature_dim)
    epsilon = 1.0
    while (
        plan := plan_release(wide, units=64, epsilon=epsilon, delta=1e-6)
    ).calibration.sigma < sigma_at_least:
        epsilon /= 1.5
    return plan.release(rows).spec


def test_the_default_limit_and_old_profiles(profile) -> None:
    """The default is derived from D and R; a profile file from before the field loads with it
    and keeps its id (max_sigma is policy, outside the id), and so does a declared one."""
    assert profile.max_sigma == pytest.approx(4.0 / 768**0.25) == pytest.approx(0.7598, abs=1e-4)
    assert default_max_sigma(1024, 0.5) == pytest.approx(2.0 / 2048**0.25)
    old = {k: v for k, v in profile.to_dict().items() if k != "max_sigma"}
    assert profile.legacy_profile_id == sha256_hex(canonical_json(old))[:16] == "fb7d84bda60c9291"
    assert profile.profile_id == sha256_hex(jcs(old))[:16] == "af8ec7ab376aa301"
    loaded = SpecProfile.from_json(json.dumps({**old, "profile_id": profile.legacy_profile_id}))
    assert loaded == profile
    declared = SpecProfile.from_json(json.dumps({**old, "max_sigma": 2.5}))
    assert declared.max_sigma == 2.5 and declared.profile_id == profile.profile_id
    for bad in (-1.0, MAX_SIGMA * 2, float("inf")):
        with pytest.raises(InvalidArgument, match="max_sigma must be in"):
            dataclasses.replace(profile, max_sigma=bad)


def test_the_client_refuses_before_booking(tmp_path: Path, profile) -> None:
    """A release the profile would refuse is refused on premises, before the ledger books it."""
    texts = [f"record {i}" for i in range(50)]
    ledger = Ledger(tmp_path / "ledger.jsonl")
    plan_release(profile, units=50, epsilon=0.5, delta=1e-6)  # sigma 0.34: accepted
    booking = SpecBooking.open(ledger, texts, epsilon=0.1, delta=1e-6)
    with pytest.raises(InvalidArgument, match=r"sigma=1\.513, above the market profile's max_sigma 0\.7598"):
        booking.spec(profile, destination="market")
    assert ledger.state().entries == ()


def test_a_search_noisier_than_the_profile_allows_is_refused(tmp_path: Path, profile) -> None:
    market = Market.open(tmp_path / "m", profile=profile)
    try:
        spec = noisy_spec(profile, 2 * profile.max_sigma)
        for mixture in (False, True):
            with pytest.raises(InvalidArgument, match=r"\[0, 0\.7598\] \(the profile's max_sigma"):
                market.search(spec, mixture=mixture)
    finally:
        market.close()


def test_uploads_over_the_limit_are_refused_and_old_ones_are_not_ranked(
    tmp_path: Path, tiny_bert: Path, profile
) -> None:
    """Over gRPC: INVALID_ARGUMENT naming the limit. A learnware listed while the market allowed
    more noise stays listed after the operator lowers max_sigma, but no search ranks it."""
    adapter = make_adapter(tiny_bert, tmp_path / "adapter", base_name=TINY_BERT)
    spec = noisy_spec(profile, 2 * profile.max_sigma)
    path = tmp_path / "noisy.tar"
    make_package(path, adapter, key=generate_key(), spec=spec, learnware_id="noisy", base_model=TINY_BERT)
    lenient = dataclasses.replace(profile, max_sigma=MAX_SIGMA)

    @contextmanager
    def client_of(market_profile: SpecProfile) -> Iterator[MarketClient]:
        models, access = {TINY_BERT: tiny_bert}, AccessPolicy.open_demo()
        with (
            running_market(tmp_path / "m", market_profile, base_models=models, access=access) as running,
            MarketClient(running.address) as client,
        ):
            yield client

    with (
        client_of(profile) as client,
        pytest.raises(InvalidArgument, match="the profile's max_sigma") as refused,
    ):
        client.upload(path)
    assert refused.value.status == "INVALID_ARGUMENT"
    with client_of(lenient) as client:
        client.upload(path)
        assert [m.learnware_id for m in client.search(spec).matches] == ["noisy"]
    with client_of(profile) as client:
        assert [lw.card.id for lw in client.list()] == ["noisy"]
        query = plan_release(profile, units=64, epsilon=1.0, delta=1e-6).release(
            random_unit_rows(np.random.default_rng(3), 64, profile.feature_dim)
        )
        assert client.search(query.spec).matches == ()
        assert status_of(lambda: client.search(spec)) == "INVALID_ARGUMENT"


def test_an_honest_noisy_learnware_no_longer_wins_by_luck(profile) -> None:
    """Five exact learnwares (clusters) beside one honest release of a sixth cluster, nearly as
    noisy as the profile allows, released afresh 50 times; 4 users of the five search each time
    with an epsilon = 1 spec of 64 records. Ranked by the point distance the noisy one came
    first in about half the searches; by the bound, in almost none, and the users' own
    learnware comes first."""
    dim = profile.feature_dim
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((6, dim)) * 0.6
    exact = [
        listed(f"exact-{i}", exact_spec(random_unit_rows(rng, 300, dim, c), profile))
        for i, c in enumerate(centres[:5])
    ]
    near_limit = plan_release(profile, units=20, epsilon=0.55, delta=1e-6)
    assert 0.95 * profile.max_sigma < near_limit.calibration.sigma <= profile.max_sigma
    user = plan_release(profile, units=64, epsilon=1.0, delta=1e-6)
    by_distance = by_bound = right = searches = 0
    for _ in range(50):
        noisy = near_limit.release(random_unit_rows(rng, 20, dim, centres[5]), uniform=rng.random).spec
        index = ExactIndex([*exact, listed("noisy", noisy)])
        for task in rng.choice(5, size=4):
            query = user.release(random_unit_rows(rng, 64, dim, centres[task]), uniform=rng.random).spec
            matches = index.search(query, top_k=6).matches
            assert [m.rank_bound for m in matches] == sorted(m.rank_bound for m in matches)
            by_distance += min(matches, key=lambda m: m.distance).learnware_id == "noisy"
            by_bound += matches[0].learnware_id == "noisy"
            right += matches[0].learnware_id == f"exact-{task}"
            searches += 1
    assert 0.3 * searches < by_distance < 0.7 * searches
    assert by_bound < 0.05 * searches
    assert right > 0.9 * searches


def test_an_honest_noisy_learnware_takes_no_mixture_weight_by_luck(profile) -> None:
    """Users with half of cluster 0 and half of cluster 1 ask for a mixture beside the noisy
    learnware (fresh each time): charged for its noise it gets almost no weight, where the
    point estimate gave it about half."""
    dim = profile.feature_dim
    rng = np.random.default_rng(8)
    centres = rng.standard_normal((6, dim)) * 0.6
    exact = np.stack([exact_spec(random_unit_rows(rng, 300, dim, c), profile).values for c in centres[:5]])
    near_limit = plan_release(profile, units=20, epsilon=0.55, delta=1e-6)
    user = plan_release(profile, units=256, epsilon=1.0, delta=1e-6)
    sigmas = np.r_[np.zeros(5), near_limit.calibration.sigma]
    weights = {0.0: [], RANK_Z: []}
    for _ in range(40):
        noisy = near_limit.release(random_unit_rows(rng, 20, dim, centres[5]), uniform=rng.random).spec
        rows = np.vstack([random_unit_rows(rng, 128, dim, centres[i]) for i in (0, 1)])
        query = user.release(rows, uniform=rng.random).spec
        for z, found in weights.items():
            mixture = explain_as_mixture(
                query.values, query.privacy.sigma, np.vstack([exact, noisy.values]), sigmas, z=z
            )
            found.append(dict(zip(mixture.indices, mixture.weights, strict=True)).get(5, 0.0))
    assert np.mean(weights[0.0]) > 0.25
    assert np.mean(weights[RANK_Z]) < 0.05
