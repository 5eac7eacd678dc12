"""The projected spec kind: a public projection fitted on the market's published specs, a spec
clipped about its centre, compared by direction with the centre added back (real gRPC market)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lmdock.client.connection import MarketClient
from lmdock.common import serde
from lmdock.common.errors import InvalidArgument
from lmdock.common.exit_codes import USAGE
from lmdock.common.features import build_feature_map
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import fit_projected_profile, make_profile
from lmdock.common.ranking import comparable, compared_query
from lmdock.common.signing import generate_key
from lmdock.common.spec import Spec, exact_spec, plan_release
from lmdock.server.auth import AccessPolicy
from lmdock.server.cli import main as market_main
from lmdock.server.config import load_added_profiles, load_or_create_profile

from tests.helpers import make_adapter, make_package, random_unit_rows
from tests.market_helpers import running_market

KEY = generate_key()
DIM = 384


def _orthonormal(rng: np.random.Generator, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((DIM, k)))
    return q.T


def test_the_fit_keeps_the_fewest_directions_that_hold_the_spread_known_values() -> None:
    """Specs c +- 2u, c +- v: scatter 8 along u, 2 along v (80 % and 20 %)."""
    u, v = _orthonormal(np.random.default_rng(1), 2)
    c = 0.05 * np.ones(DIM)
    specs = np.stack([c + 2 * u, c - 2 * u, c + v, c - v])
    base = make_profile()
    one = fit_projected_profile(specs, np.zeros(4), base=base, variance=0.8, clip_radius=0.5)
    assert (one.kernel, one.feature_dim, one.clip_radius) == ("projected", 1, 0.5)
    row = np.asarray(one.projection)
    sign = np.sign(u[np.argmax(np.abs(u))])  # the largest entry of a row is made positive
    assert np.allclose(row, sign * u, atol=1e-6)
    assert np.allclose(one.centre, [row @ c], atol=1e-6) and one.offset == one.centre
    two = fit_projected_profile(specs, np.zeros(4), base=base, variance=0.9)
    assert two.feature_dim == 2 and two.clip_radius == 0.3
    # claimed noise sigma = 0.05 takes the Marchenko-Pastur edge 0.05^2 (sqrt(384) + sqrt(3))^2
    # = 1.137 from each direction: u then holds 6.863 / (6.863 + 0.863) = 0.888 of the spread
    assert fit_projected_profile(specs, np.zeros(4), base=base, variance=0.85).feature_dim == 2
    assert fit_projected_profile(specs, np.full(4, 0.05), base=base, variance=0.85).feature_dim == 1
    # the same fit gives the same profile; the profile is exact on the wire and in JSON
    assert fit_projected_profile(specs, np.zeros(4), base=base) == two
    assert serde.profile_from_pb(serde.profile_to_pb(two)) == two == SpecProfile.from_json(two.to_json())


def test_noise_on_the_specs_adds_no_directions_to_the_fit() -> None:
    """50 noisy specs of a 10-direction spread (weights falling from 1 to 0.02): the noise's
    own directions, 374 of them, never enter; the weakest signal ones may drop out."""
    rng = np.random.default_rng(4)
    basis = _orthonormal(rng, 10)
    weights = np.array([1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02]) * 0.3
    specs = 0.1 + (rng.standard_normal((50, 10)) * weights) @ basis
    exact = fit_projected_profile(specs, np.zeros(50), base=make_profile()).feature_dim
    for sigma in (0.01, 0.02, 0.05):
        noisy = specs + rng.standard_normal(specs.shape) * sigma
        k = fit_projected_profile(noisy, np.full(50, sigma), base=make_profile()).feature_dim
        assert exact - 2 <= k <= exact


def test_the_fit_refuses_what_it_cannot_fit_on() -> None:
    base = make_profile()
    rows = random_unit_rows(np.random.default_rng(0), 4, DIM)
    for specs, sigmas, kw, message in (
        (rows[:2], np.zeros(2), {}, "at least 3 learnwares"),
        (rows, np.zeros(3), {}, "one sigma per spec"),
        (np.ones((3, DIM)), np.zeros(3), {}, "nothing to fit"),
        (rows, np.zeros(4), {"variance": 0.0}, "variance must be"),
        (
            rows,
            np.zeros(4),
            {"base": make_profile(kernel="rbf", feature_dim=64, bandwidth=1.0)},
            "linear or cosine",
        ),
    ):
        with pytest.raises(InvalidArgument, match=message):
            fit_projected_profile(specs, sigmas, **{"base": base, **kw})


def test_a_projected_map_clips_about_its_centre_and_ranks_with_it_added_back() -> None:
    rng = np.random.default_rng(2)
    specs = random_unit_rows(rng, 6, DIM, np.ones(DIM) * 0.1)
    profile = fit_projected_profile(specs, np.zeros(6), base=make_profile(), clip_radius=0.2)
    fm = build_feature_map(profile)
    e = random_unit_rows(rng, 50, DIM)
    a = np.asarray(profile.projection).reshape(profile.feature_dim, DIM)
    expected = e @ a.T - np.asarray(profile.centre)
    expected *= np.minimum(1, 0.2 / np.linalg.norm(expected, axis=1, keepdims=True))
    assert np.allclose(fm(e), expected) and np.all(np.linalg.norm(fm(e), axis=1) <= 0.2 + 1e-12)
    m = exact_spec(fm(e), profile)
    values, sigma = comparable(profile, m.values, 0.0)
    shifted = m.values.astype(np.float64) + np.asarray(profile.centre)
    assert np.allclose(values, shifted / np.linalg.norm(shifted), atol=1e-6) and sigma == 0.0
    query = compared_query(profile, m)
    assert np.allclose(query.values, shifted, atol=1e-6) and query.privacy == m.privacy
    plain = exact_spec(e, make_profile())
    assert compared_query(make_profile(), plain) is plain  # other kinds compare a query as it is


def _clusters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Four narrow sets of unit embeddings and a mixture of them all."""
    centres = [rng.standard_normal(DIM) * 0.25 for _ in range(4)]
    sets = {f"set{i}": random_unit_rows(rng, 120, DIM, c) for i, c in enumerate(centres)}
    sets["mix"] = np.concatenate([s[:30] for s in sets.values()])
    return sets


def _publish(
    client: MarketClient, tmp_path: Path, tiny_bert: Path, specs: dict[str, Spec], prefix: str
) -> None:
    adapter = make_adapter(tiny_bert, tmp_path / f"adapter-{prefix}")
    for name, spec in specs.items():
        path = tmp_path / f"{prefix}-{name}.tar"
        make_package(
            path, adapter, key=KEY, spec=spec, learnware_id=f"{prefix}-{name}", base_model=str(tiny_bert)
        )
        client.upload(path)


def test_a_market_fits_a_projected_profile_and_serves_it_beside_its_first(
    tmp_path, tiny_bert, profile, capsys
) -> None:
    rng = np.random.default_rng(3)
    sets = _clusters(rng)
    data_dir = tmp_path / "market"
    argv = ["add-profile", "--data-dir", str(data_dir), "--kind", "projected"]
    assert market_main(argv) == USAGE  # a mistyped folder is not made a market
    assert "holds no market" in capsys.readouterr().err and not data_dir.exists()
    load_or_create_profile(data_dir, requested=profile)
    assert market_main([*argv[:-1], "cosine", "--variance", "0.8"]) == USAGE
    assert "use them with --kind projected" in capsys.readouterr().err
    assert market_main(argv) == USAGE  # an empty market has no specs to fit on
    err = capsys.readouterr().err
    assert "publish them first" in err and "Traceback" not in err
    access = AccessPolicy.open_demo()
    linear = {n: exact_spec(x, profile) for n, x in sets.items()}
    with (
        running_market(data_dir, profile, access=access, allow_local_base_models=True) as running,
        MarketClient(running.address) as client,
    ):
        _publish(client, tmp_path, tiny_bert, linear, "lin")
    assert market_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    (projected,) = load_added_profiles(data_dir)
    assert out["added"] == projected.profile_id and out["feature_dim"] == projected.feature_dim >= 2
    assert out["served_newest_first"] == [projected.profile_id, profile.profile_id]
    fm = build_feature_map(projected)
    with (
        running_market(
            data_dir, profile, access=access, allow_local_base_models=True, added_profiles=(projected,)
        ) as running,
        MarketClient(running.address) as client,
    ):
        assert client.profiles() == [projected, profile] and client.profile() == projected
        _publish(
            client, tmp_path, tiny_bert, {n: exact_spec(fm(x), projected) for n, x in sets.items()}, "proj"
        )
        fresh = random_unit_rows(rng, 200, DIM, sets["set2"].mean(axis=0) * 4)
        private = plan_release(projected, epsilon=1.0, delta=1e-6, units=200).release(fm(fresh)).spec
        for query in (exact_spec(fm(fresh), projected), private):
            assert client.search(query, top_k=3).matches[0].learnware_id == "proj-set2"
        # the first profile's learnwares stay searchable under it (and there, by the plain
        # distance, the mixture's short mean is nearer than set2's: what the kind is for)
        assert client.search(exact_spec(fresh, profile), top_k=1).matches[0].learnware_id == "lin-mix"
