import numpy as np
import pytest
from lmdock.common import serde
from lmdock.common.card import Card
from lmdock.common.errors import InvalidArgument
from lmdock.common.market_types import LearnwareInfo, Match, MixtureComponent, PackageHeader, SearchResult
from lmdock.common.package import TaskInfo
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import release
from lmdock.v1 import market_pb2 as pb

from tests.helpers import cluster_spec, random_unit_rows


def test_profile_round_trips_through_proto_and_json(rng) -> None:
    profile = make_profile(
        embedder_hash="a" * 64,
        kernel="rbf",
        feature_dim=128,
        bandwidth=0.5,
        seed=3,
        centre=rng.standard_normal(128) * 0.1,
        clip_radius=0.8,
        max_sigma=2.5,
    )
    assert serde.profile_from_pb(serde.profile_to_pb(profile)) == profile
    assert SpecProfile.from_json(profile.to_json()) == profile


def test_a_profile_from_a_market_before_max_sigma_gets_the_default() -> None:
    declared = make_profile(embedder_hash="a" * 64, max_sigma=2.5)
    message = serde.profile_to_pb(declared)
    message.ClearField("max_sigma")  # what an older market sends
    old = serde.profile_from_pb(message)
    assert old.max_sigma == make_profile(embedder_hash="a" * 64).max_sigma
    assert old.profile_id == declared.profile_id


def test_profile_with_wrong_id_is_refused() -> None:
    message = serde.profile_to_pb(make_profile(embedder_hash="a" * 64))
    message.profile_id = "0123456789abcdef"
    with pytest.raises(InvalidArgument, match="profile_id"):
        serde.profile_from_pb(message)


def test_spec_round_trips(rng) -> None:
    profile = make_profile(embedder_hash="a" * 64)
    spec = release(random_unit_rows(rng, 25, 384), profile, epsilon=0.5, delta=1e-7).spec
    again = serde.spec_from_pb(pb.Spec.FromString(serde.spec_to_pb(spec).SerializeToString()))
    assert np.array_equal(again.values, spec.values)
    assert again.privacy == spec.privacy and again.profile_id == spec.profile_id


def test_spec_without_privacy_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        serde.spec_from_pb(pb.Spec(version=1, profile_id="x", values=[0.0]))


def test_learnware_and_search_round_trips() -> None:
    profile = make_profile(embedder_hash="a" * 64)
    info = LearnwareInfo(
        card=Card(id="abc-1", name="A", domain="medical", licence="MIT", publisher="p", tags=("t",)),
        base_model="m",
        task=TaskInfo("classification", ("x", "y")),
        spec=cluster_spec(profile, 1),
        package_sha256="b" * 64,
        package_size=10,
        eval_scores={"accuracy": 0.5},
        dp_trained=True,
        dp_epsilon=3.0,
    )
    again = serde.learnware_from_pb(serde.learnware_to_pb(info))
    assert np.array_equal(again.spec.values, info.spec.values)
    assert again.__dict__ | {"spec": None} == info.__dict__ | {"spec": None}
    result = SearchResult(
        matches=(
            Match("a", "A", "d", 0.1, 0.9),
            Match("b", "B", "d", 0.2, 0.5, distance_sd=0.05, rank_bound=0.3),
        ),
        mixture=(MixtureComponent("a", 1.0),),
        mixture_residual=0.01,
    )
    assert serde.search_result_from_pb(serde.search_result_to_pb(result)) == result
    header = PackageHeader("a", "c" * 64, 5)
    assert serde.header_from_pb(serde.header_to_pb(header)) == header
