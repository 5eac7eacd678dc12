"""A cosine profile scales each learnware's spec to unit norm: a very noisy spec must not buy
itself a place by it. Its debiased norm is about 0 (its values are mostly noise), so its scale,
and with it its noise, is large, and the ranking's bound charges that noise."""

from __future__ import annotations

import dataclasses

import numpy as np
from lmdock.common.profile import MAX_SIGMA
from lmdock.common.profile_factory import make_profile
from lmdock.common.spec import exact_spec, plan_release
from lmdock.server.index.by_profile import ProfileIndexes
from lmdock.server.index.exact import ExactIndex

from tests.helpers import listed, random_unit_rows


def test_a_noisy_learnware_under_a_cosine_profile_rarely_comes_first() -> None:
    cosine = make_profile(kernel="cosine")
    rng = np.random.default_rng(11)
    dim = cosine.feature_dim
    centres = [rng.standard_normal(dim) * 0.6 for _ in range(4)]
    honest = [exact_spec(random_unit_rows(rng, 200, dim, c), cosine) for c in centres]
    # an honest publisher's release of 20 records at a sigma the profile accepts (about 0.74)
    plan = plan_release(dataclasses.replace(cosine, max_sigma=MAX_SIGMA), epsilon=0.55, delta=1e-6, units=20)
    assert 0.5 < plan.calibration.sigma <= cosine.max_sigma
    user_plan = plan_release(cosine, epsilon=1.0, delta=1e-6, units=50)
    first = 0
    trials = 120
    for t in range(trials):
        index = ProfileIndexes({cosine: ExactIndex()})
        for i, spec in enumerate(honest):
            index.add(listed(f"honest-{i}", spec))
        mixed = np.concatenate([random_unit_rows(rng, 5, dim, c) for c in centres])
        index.add(listed("noisy", plan.release(mixed).spec))
        query = user_plan.release(random_unit_rows(rng, 50, dim, centres[t % 4])).spec
        first += index.search(query, top_k=1).matches[0].learnware_id == "noisy"
    assert first / trials <= 0.05
