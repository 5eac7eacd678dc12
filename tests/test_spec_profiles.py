"""Profiles side by side: a market serves several spec profiles, one index each (real gRPC)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from lmdock.client.connection import MarketClient
from lmdock.common import serde
from lmdock.common.errors import AlreadyExists, InvalidArgument
from lmdock.common.exit_codes import ERROR, USAGE
from lmdock.common.profile_factory import make_profile
from lmdock.common.ranking import comparable
from lmdock.common.signing import generate_key
from lmdock.common.spec import EXACT, Spec
from lmdock.server.auth import AccessPolicy
from lmdock.server.cli import main as market_main
from lmdock.server.config import add_profile, load_added_profiles, load_or_create_profile
from lmdock.server.index.by_profile import ProfileIndexes
from lmdock.server.index.exact import ExactIndex
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

from tests.helpers import cluster_spec, listed, make_adapter, make_package
from tests.market_helpers import running_market


@pytest.fixture(scope="module")
def newer():
    return make_profile(kernel="rbf", feature_dim=256, bandwidth=1.0, seed=3)


KEY = generate_key()


def _packages(tmp_path: Path, tiny_bert: Path, profiles) -> list[Path]:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    out = []
    for name, profile in profiles.items():
        for i in range(2):
            path = tmp_path / f"{name}{i}.tar"
            make_package(
                path,
                adapter,
                key=KEY,
                spec=cluster_spec(profile, seed=i),
                learnware_id=f"{name}-{i}",
                base_model=str(tiny_bert),
            )
            out.append(path)
    return out


def test_old_learnwares_stay_searchable_beside_a_newer_profile(tmp_path, tiny_bert, profile, newer) -> None:
    data_dir = tmp_path / "market"
    load_or_create_profile(data_dir, requested=profile)
    assert add_profile(data_dir, newer) == (newer,)
    with pytest.raises(AlreadyExists):
        add_profile(data_dir, profile)
    packages = _packages(tmp_path, tiny_bert, {"old": profile, "new": newer})
    access = AccessPolicy.open_demo()
    with (
        running_market(
            data_dir,
            profile,
            access=access,
            allow_local_base_models=True,
            added_profiles=load_added_profiles(data_dir),
        ) as running,
        MarketClient(running.address) as client,
    ):
        for p in packages:
            client.upload(p)
        assert client.profiles() == [newer, profile]
        assert client.profile() == newer  # the newest this client supports
        with grpc.insecure_channel(running.address) as channel:  # a client from before the list
            raw = pb_grpc.MarketServiceStub(channel).GetSpecProfile(pb.GetSpecProfileRequest())
        assert serde.profile_from_pb(raw.profile) == profile
        assert len(running.market.index) == 4
        for name, p in (("old", profile), ("new", newer)):
            found = client.search(cluster_spec(p, seed=1), top_k=5).matches
            assert [m.learnware_id for m in found] == [f"{name}-1", f"{name}-0"]
        stranger = make_profile(seed=9, kernel="rbf", feature_dim=128, bandwidth=0.5)
        with pytest.raises(
            InvalidArgument, match=f"the market serves '{newer.profile_id}', '{profile.profile_id}'"
        ):
            client.search(cluster_spec(stranger, seed=0))
        with pytest.raises(InvalidArgument, match="fetch the market's profiles"):
            client.upload(_packages(tmp_path / "x", tiny_bert, {"stray": stranger})[0])
    # a restart reads both profiles back and indexes each learnware under its own
    with (
        running_market(
            data_dir, profile, access=access, added_profiles=load_added_profiles(data_dir)
        ) as running,
        MarketClient(running.address) as client,
    ):
        assert len(running.market.index) == 4
        assert client.search(cluster_spec(profile, seed=0), top_k=1).matches[0].learnware_id == "old-0"


def test_a_client_skips_a_profile_kind_it_does_not_know(profile, newer) -> None:
    unknown = serde.profile_to_pb(newer)
    unknown.kernel = "task-vector"  # a later issue's kind, unknown to this client
    response = pb.GetSpecProfileResponse(
        profile=serde.profile_to_pb(profile), profiles=[unknown, serde.profile_to_pb(profile)]
    )
    assert serde.supported_profiles(response) == [profile]
    # a market from before the list sends only its one profile
    assert serde.supported_profiles(pb.GetSpecProfileResponse(profile=serde.profile_to_pb(newer))) == [newer]


def test_market_cli_adds_a_profile_by_kind_or_file(tmp_path, capsys, newer) -> None:
    data_dir = tmp_path / "m"
    assert market_main(["add-profile", "--data-dir", str(data_dir), "--kind", "linear"]) == ERROR
    assert "already serves profile" in capsys.readouterr().err  # the first profile is linear
    (tmp_path / "p.json").write_text(newer.to_json())
    assert market_main(["add-profile", "--data-dir", str(data_dir), "--file", str(tmp_path / "p.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == newer.profile_id and out["served_newest_first"][0] == newer.profile_id
    for bad, message in (
        (tmp_path / "missing.json", "cannot read the profile file"),
        (tmp_path, "cannot read"),
    ):
        assert market_main(["add-profile", "--data-dir", str(data_dir), "--file", str(bad)]) == USAGE
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    (tmp_path / "junk.json").write_bytes(b"\xff\xfe not a profile")
    assert (
        market_main(["add-profile", "--data-dir", str(data_dir), "--file", str(tmp_path / "junk.json")]) == 2
    )
    assert "cannot read" in capsys.readouterr().err
    (data_dir / "added-profiles.json").write_text('{"not": "a list"}')
    with pytest.raises(InvalidArgument, match="JSON list of spec profiles"):
        load_added_profiles(data_dir)


def test_comparable_scales_a_cosine_profiles_specs_to_unit_debiased_norm() -> None:
    values = np.array([0.3, 0.4], dtype=np.float32)  # norm 0.5
    assert comparable(make_profile(), values, 0.1) == (values, 0.1)
    scaled, sigma = comparable(make_profile(kernel="cosine"), values, 0.0)
    assert np.allclose(scaled, [0.6, 0.8]) and sigma == 0.0
    # a noisy spec: its norm less its noise energy, ||m||^2 - sigma^2 D = 0.25 - 0.01 * 2
    scaled, sigma = comparable(make_profile(kernel="cosine"), values, 0.1)
    assert sigma == pytest.approx(0.1 / np.sqrt(0.23)) and np.allclose(scaled, values / np.sqrt(0.23))


def test_a_cosine_profile_ranks_a_short_centroid_mean_below_the_right_direction(profile) -> None:
    """A broad task (mean norm 0.5) along t; a narrow learnware N (norm 0.9, cosine 0.8 to t)
    and a wide one W (norm 0.3, cosine 0.7): the plain distance prefers W (0.13 against 0.34),
    the direction prefers N."""
    cosine = make_profile(kernel="cosine")
    rng = np.random.default_rng(3)
    t, o1, o2 = np.linalg.qr(rng.standard_normal((profile.feature_dim, 3)))[0].T
    narrow = 0.9 * (0.8 * t + 0.6 * o1)
    wide = 0.3 * (0.7 * t + np.sqrt(1 - 0.49) * o2)
    indexes = ProfileIndexes({profile: ExactIndex(), cosine: ExactIndex()})
    for p in (profile, cosine):
        for name, v in (("narrow", narrow), ("wide", wide)):
            indexes.add(listed(f"{p.kernel}-{name}", Spec(p.profile_id, v.astype(np.float32), EXACT)))
    tops = {}
    for p in (profile, cosine):
        query = Spec(p.profile_id, (0.5 * t).astype(np.float32), EXACT)
        tops[p.kernel] = [m.learnware_id for m in indexes.search(query, top_k=2).matches]
    assert tops == {"linear": ["linear-wide", "linear-narrow"], "cosine": ["cosine-narrow", "cosine-wide"]}
    indexes.remove("cosine-narrow")
    assert len(indexes) == 3
