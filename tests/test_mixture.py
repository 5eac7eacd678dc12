"""Mixture answers: the simplex least-squares solver, and a user whose data mixes two learnwares'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from lmdock.client.connection import MarketClient
from lmdock.common.mixture import explain_as_mixture, project_to_simplex, simplex_least_squares
from lmdock.common.signing import generate_key
from lmdock.common.spec import exact_spec, release
from lmdock.lab.embedded import embedded_market

from tests.helpers import make_adapter, make_package, random_unit_rows


def test_projection_onto_the_simplex_known_values() -> None:
    assert np.allclose(project_to_simplex(np.array([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5])
    assert np.allclose(project_to_simplex(np.array([1.0, 1.0])), [0.5, 0.5])
    assert np.allclose(project_to_simplex(np.array([3.0, 0.0, -1.0])), [1.0, 0.0, 0.0])
    assert np.allclose(project_to_simplex(np.array([0.5, 0.5, 0.5])), [1 / 3] * 3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=12))
def test_projection_lands_on_the_simplex(values: list[float]) -> None:
    w = project_to_simplex(np.array(values))
    assert (w >= 0).all() and abs(w.sum() - 1) < 1e-9


def test_exact_mixtures_are_recovered() -> None:
    rng = np.random.default_rng(3)
    means = rng.standard_normal((5, 40))
    truth = np.array([0.6, 0.0, 0.4, 0.0, 0.0])
    query = truth @ means
    mix = explain_as_mixture(query, 0.0, means, np.zeros(5))
    assert mix.indices == (0, 2)
    assert np.allclose(mix.weights, (0.6, 0.4), atol=1e-4) and abs(mix.residual) < 1e-6


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6))
def test_solution_is_no_worse_than_any_vertex(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((k, 8))
    s = rng.standard_normal(8)
    gram, linear = m @ m.T, m @ s
    w = simplex_least_squares(gram, linear)

    def f(x: np.ndarray) -> float:
        return float(x @ gram @ x - 2 * x @ linear)

    assert (w >= -1e-12).all() and abs(w.sum() - 1) < 1e-9
    assert all(f(w) <= f(np.eye(k)[i]) + 1e-7 for i in range(k))


def test_search_says_when_data_mixes_two_learnwares(tmp_path: Path, tiny_bert: Path, profile) -> None:
    dim = profile.feature_dim
    centres = [np.random.default_rng(100 + i).standard_normal(dim) * 0.6 for i in range(4)]
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    key = generate_key()
    with (
        embedded_market(tmp_path / "market", profile=profile) as (address, _),
        MarketClient(address) as client,
    ):
        for i, centre in enumerate(centres):
            rows = random_unit_rows(np.random.default_rng(i), 300, dim, centre)
            path = tmp_path / f"lw{i}.tar"
            make_package(
                path, adapter, key=key, spec=exact_spec(rows, profile), learnware_id=f"lw-{i}",
                base_model=str(tiny_bert),
            )  # fmt: skip
            client.upload(path)
        rng = np.random.default_rng(7)
        # 500 + 500 records at epsilon = 1: over 40 simulated draws the largest weight error was
        # 0.03 (mean 0.01), so a spurious component above the 0.05 cut-off is far in the tail.
        user = np.vstack(
            [random_unit_rows(rng, 500, dim, centres[1]), random_unit_rows(rng, 500, dim, centres[3])]
        )
        spec = release(user, profile, epsilon=1.0, delta=1e-6).spec
        result = client.search(spec, top_k=4, mixture=True)
        plain = client.search(spec, top_k=4)
    weights = {c.learnware_id: c.weight for c in result.mixture}
    assert set(weights) == {"lw-1", "lw-3"}, weights
    assert abs(weights["lw-1"] - 0.5) < 0.1 and abs(sum(weights.values()) - 1) < 1e-9
    assert result.mixture_residual < result.matches[0].distance / 4  # the mixture explains far better
    assert plain.mixture == () and {m.learnware_id for m in result.matches[:2]} == {"lw-1", "lw-3"}
