"""A projected profile from a hostile market or file: refused with a clear error, or harmless.

Whatever projection A and centre a profile carries, the feature map clips A e - c to radius R,
so every record's feature lies within R of the origin and a spec's sensitivity stays 2R/n: the
privacy claim does not rest on A being what the market says it is."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from lmdock.common import serde
from lmdock.common.errors import InvalidArgument
from lmdock.common.exit_codes import USAGE
from lmdock.common.features import build_feature_map
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import fit_projected_profile, make_profile
from lmdock.common.spec import plan_release
from lmdock.server.cli import main as market_main
from lmdock.v1 import market_pb2 as pb

from tests.helpers import random_unit_rows

DIM = 384


@pytest.fixture(scope="module")
def projected():
    specs = random_unit_rows(np.random.default_rng(0), 8, DIM, np.ones(DIM) * 0.1)
    return fit_projected_profile(specs, np.zeros(8), base=make_profile())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.projection.pop(), "projection has"),
        (lambda m: m.projection.__setitem__(0, float("nan")), "finite and within"),
        (lambda m: m.projection.__setitem__(0, 1e30), "finite and within"),
        (lambda m: m.centre.__setitem__(0, float("inf")), "centre values"),
        (lambda m: setattr(m, "kernel", "linear"), "feature_dim == embedding_dim|only a projected"),
        (lambda m: setattr(m, "feature_dim", DIM + 1), "feature_dim"),
    ],
)
def test_a_malformed_projected_profile_from_a_market_is_refused(projected, change, message) -> None:
    message_pb = serde.profile_to_pb(projected)
    change(message_pb)
    with pytest.raises(InvalidArgument, match=message):
        serde.profile_from_pb(message_pb)
    # a client skips it and keeps the market's other profiles
    response = pb.GetSpecProfileResponse(profiles=[message_pb, serde.profile_to_pb(make_profile())])
    assert serde.supported_profiles(response) == [make_profile()]


def test_a_projection_on_another_kind_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="only a projected profile carries a projection"):
        make_profile(kernel="cosine", projection=(0.5,) * DIM)


def test_any_projection_within_bounds_keeps_every_feature_within_the_clip_radius(projected) -> None:
    """The largest entries allowed (+-1), a centre far off: features still have norm <= R, and
    the release's own check (rows within R) passes, so its sensitivity is 2R/n as stated."""
    rng = np.random.default_rng(1)
    k = projected.feature_dim
    extreme = dataclasses.replace(
        projected,
        projection=tuple(rng.choice([-1.0, 1.0], k * DIM)),
        centre=tuple(rng.choice([-2.0, 2.0], k)),
    )
    hostile = make_profile(
        kernel="projected",
        feature_dim=k,
        clip_radius=extreme.clip_radius,
        centre=extreme.centre,
        projection=extreme.projection,
    )
    features = build_feature_map(hostile)(random_unit_rows(rng, 64, DIM))
    assert np.all(np.isfinite(features))
    assert np.max(np.linalg.norm(features, axis=1)) <= hostile.clip_radius * (1 + 1e-12)
    spec = plan_release(hostile, epsilon=1.0, delta=1e-6, units=64).release(features).spec
    assert spec.privacy.sigma > 0 and np.all(np.isfinite(spec.values))


def test_a_projected_profile_file_with_bad_values_is_a_readable_error(tmp_path, projected, capsys) -> None:
    data = projected.to_dict()
    data["projection"][3] = float("nan")  # json writes NaN, which Python's json reads back
    (tmp_path / "p.json").write_text(json.dumps(data))
    argv = ["add-profile", "--data-dir", str(tmp_path / "m"), "--file", str(tmp_path / "p.json")]
    assert market_main(argv) == USAGE
    err = capsys.readouterr().err
    assert "finite" in err and "Traceback" not in err


def test_a_profile_value_that_is_not_float32_is_refused(projected) -> None:
    """The wire and the feature-map hash read float32: a finer value would give clients another
    profile id than the market's, and every client would skip the profile without a word."""
    data = projected.to_dict()
    data["projection"][0] += 1e-12
    with pytest.raises(InvalidArgument, match="projection values must be float32"):
        SpecProfile.from_dict(data)
