"""The search index: incremental updates rank as a fresh index does, and searches never see half of one."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from lmdock.common.card import Card
from lmdock.common.errors import InvalidArgument
from lmdock.common.market_types import LearnwareInfo, Match, MixtureComponent, SearchResult
from lmdock.common.mixture import explain_as_mixture
from lmdock.common.package import TaskInfo
from lmdock.common.profile import SpecProfile
from lmdock.common.ranking import confidences, distances
from lmdock.common.spec import EXACT, Spec, debiased_sq_distance
from lmdock.server.blobs import LocalBlobStore
from lmdock.server.db import Database
from lmdock.server.index import IndexEntry, SpecIndex
from lmdock.server.index.backends import IndexSource
from lmdock.server.index.exact import ExactIndex
from lmdock.server.index.hnsw import HnswIndex, beam_widening
from lmdock.server.index.ivf import IvfIndex, probes
from lmdock.server.index.shortlist import ShortlistIndex
from lmdock.server.market import Market, default_db_url

from tests.helpers import cluster_spec

DIM = 16


def _learnware(i: int, values: np.ndarray, sigma: float = 0.0) -> LearnwareInfo:
    privacy = dataclasses.replace(EXACT, sigma=sigma, epsilon=1.0, delta=1e-6) if sigma else EXACT
    return LearnwareInfo(
        card=Card(id=f"lw-{i}", name=f"learnware {i}", domain="test", licence="-", publisher="-"),
        base_model="-",
        task=TaskInfo("generation"),
        spec=Spec(profile_id="p", values=values.astype(np.float32), privacy=privacy),
        package_sha256="0" * 64,
        package_size=1,
    )


def _learnwares(n: int, seed: int = 0) -> list[LearnwareInfo]:
    """Every third learnware has its own spec; the others repeat one of five, so distances tie."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((5, DIM))
    return [
        _learnware(i, rng.standard_normal(DIM) if i % 3 == 0 else shared[i % 5], sigma=0.01 * (i % 2))
        for i in range(n)
    ]


def _query(rng: np.random.Generator) -> Spec:
    return Spec(profile_id="p", values=rng.standard_normal(DIM).astype(np.float32), privacy=EXACT)


def test_incremental_updates_rank_as_a_fresh_index_does() -> None:
    items = _learnwares(40)
    index = ExactIndex()
    kept: list[LearnwareInfo] = []
    rng = np.random.default_rng(1)
    for step, lw in enumerate(items):
        index.add(lw)
        kept.append(lw)
        if step % 4 == 3:  # remove one from the middle now and then
            gone = kept.pop(len(kept) // 2)
            index.remove(gone.card.id)
        fresh = ExactIndex(kept)
        assert len(index) == len(fresh) == len(kept)
        for mixture in (False, True):
            query = _query(rng)
            assert index.search(query, top_k=50, mixture=mixture) == fresh.search(
                query, top_k=50, mixture=mixture
            )


def test_ties_keep_insertion_order() -> None:
    same = np.ones(DIM)
    index = ExactIndex([_learnware(i, same) for i in (3, 1, 2)])
    index.remove("lw-1")
    index.add(_learnware(0, same))
    result = index.search(_query(np.random.default_rng(0)), top_k=10)
    assert [m.learnware_id for m in result.matches] == ["lw-3", "lw-2", "lw-0"]


def test_removing_an_unknown_id_changes_nothing() -> None:
    index = ExactIndex(_learnwares(3))
    index.remove("nope")
    assert len(index) == 3


def test_an_empty_index_finds_nothing() -> None:
    index: SpecIndex = ExactIndex()
    assert index.search(_query(np.random.default_rng(0)), top_k=5, mixture=True).matches == ()


def _reference_search(items: list[LearnwareInfo], query: Spec, *, top_k: int, mixture: bool) -> SearchResult:
    """The exact index as it was: every row in float64, a full stable sort by the bound."""
    if not items:
        return SearchResult(matches=())
    matrix = np.stack([lw.spec.values for lw in items])
    sigmas = np.array([lw.spec.privacy.sigma for lw in items], np.float64)
    est = distances(query, matrix, sigmas)
    dim = matrix.shape[1]
    a = float(np.sum(query.values.astype(np.float64) ** 2)) - query.privacy.sigma**2 * dim
    b = np.sum(matrix.astype(np.float64) ** 2, axis=1) - sigmas**2 * dim
    scores = np.clip(1.0 - est.distance / np.maximum(a + b, 1e-12), 0.0, 1.0)
    ranked = np.argsort(est.bound, kind="stable")
    components: tuple[MixtureComponent, ...] = ()
    residual = 0.0
    if mixture:
        near = ranked[:32]
        found = explain_as_mixture(
            query.values, query.privacy.sigma, matrix[near], sigmas[near], max_components=4
        )
        components = tuple(
            MixtureComponent(learnware_id=items[int(near[i])].card.id, weight=w)
            for i, w in zip(found.indices, found.weights, strict=True)
        )
        residual = found.residual
    shown = ranked[:top_k]
    confidence = confidences(est.distance[shown], matrix[shown], query.privacy.sigma, sigmas[shown])
    return SearchResult(
        mixture=components,
        mixture_residual=residual,
        matches=tuple(
            Match(
                learnware_id=items[i].card.id,
                name=items[i].card.name,
                domain=items[i].card.domain,
                distance=float(est.distance[i]),
                score=float(scores[i]),
                distance_sd=float(est.sd[i]),
                rank_bound=float(est.bound[i]),
                confidence=float(c),
            )
            for i, c in zip(shown, confidence, strict=True)
        ),
    )


def _clustered(n: int, dim: int, seed: int, noisy_share: float) -> list[LearnwareInfo]:
    """Noisy copies around a few centres (near ties), some exact duplicates, some DP-noisy specs."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim)) * 0.3
    items = []
    for i in range(n):
        values = centres[i % 8] + 0.02 * rng.standard_normal(dim)
        if i % 11 == 0:
            values = centres[i % 8]
        sigma = float(rng.uniform(0.01, 0.3)) if rng.random() < noisy_share else 0.0
        items.append(_learnware(i, values + sigma * rng.standard_normal(dim), sigma=sigma))
    return items


def _queries(items: list[LearnwareInfo], seed: int) -> list[Spec]:
    rng = np.random.default_rng(seed)
    dim = items[0].spec.values.shape[0]
    out = []
    for j in range(12):
        sigma = (0.0, 0.05, 0.5)[j % 3]
        privacy = dataclasses.replace(EXACT, sigma=sigma, epsilon=1.0, delta=1e-6) if sigma else EXACT
        base = items[int(rng.integers(len(items)))].spec.values
        values = base + 0.01 * rng.standard_normal(dim) + sigma * rng.standard_normal(dim)
        out.append(Spec(profile_id="p", values=values.astype(np.float32), privacy=privacy))
    return out


@pytest.mark.parametrize("noisy_share", [0.0, 0.3])
def test_the_exact_index_answers_as_a_full_float64_scan(noisy_share: float) -> None:
    """Bit for bit (distances, scores, bounds, tie order, mixtures), through adds and removes."""
    items = _clustered(600, 48, seed=4, noisy_share=noisy_share)
    index = ExactIndex(items[:500])
    kept = list(items[:500])
    rng = np.random.default_rng(5)
    for step in range(3):  # removals past a quarter of the rows compact the arrays
        for lw in [kept[int(i)] for i in rng.choice(len(kept), 60, replace=False)]:
            index.remove(lw.card.id)
            kept.remove(lw)
        for lw in items[500 + 30 * step : 530 + 30 * step]:
            index.add(lw)
            kept.append(lw)
        assert len(index) == len(kept)
        for query in _queries(kept, seed=step):
            for top_k, mixture in ((1, False), (10, False), (100, True)):
                expected = _reference_search(kept, query, top_k=top_k, mixture=mixture)
                assert index.search(query, top_k=top_k, mixture=mixture) == expected


APPROXIMATE: dict[str, type[ShortlistIndex]] = {"hnsw": HnswIndex, "ivf": IvfIndex}


@pytest.mark.parametrize("backend", ["exact", "hnsw", "ivf"])
@pytest.mark.parametrize("mixture", [False, True])
def test_searches_during_uploads_see_whole_snapshots(mixture: bool, backend: str) -> None:
    items = _learnwares(300, seed=2)
    by_id = {lw.card.id: lw for lw in items}
    index: SpecIndex = ExactIndex() if backend == "exact" else APPROXIMATE[backend](DIM)
    errors: list[BaseException] = []
    done = threading.Event()

    def search() -> None:
        rng = np.random.default_rng(3)
        seen = 0
        try:
            while not done.is_set():
                query = _query(rng)
                result = index.search(query, top_k=1000, mixture=mixture)
                ids = [m.learnware_id for m in result.matches]
                assert len(set(ids)) == len(ids) and len(ids) >= seen - 1  # only ever one removed
                seen = len(ids)
                for match in result.matches:  # each row still belongs to the learnware it names
                    spec = by_id[match.learnware_id].spec
                    expected = debiased_sq_distance(query, spec.values[None], np.array([spec.privacy.sigma]))
                    assert match.distance == float(expected[0])
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=search) for _ in range(3)]
    for reader in readers:
        reader.start()
    for i, lw in enumerate(items):
        index.add(lw)
        if i % 50 == 49:
            index.remove(items[i - 1].card.id)
    done.set()
    for reader in readers:
        reader.join()
    assert errors == []
    assert len(index) == 300 - 6


class _RecordingIndex(ExactIndex):
    """An index of another kind, as far as the market can tell: it records what it is asked."""

    def __init__(self, source: IndexSource) -> None:
        super().__init__()
        self.extend(source.entries())
        self.queries: list[Spec] = []

    def search(self, query: Spec, *, top_k: int, mixture: bool = False) -> SearchResult:
        self.queries.append(query)
        return super().search(query, top_k=top_k, mixture=mixture)


def test_the_market_searches_the_index_it_is_given(tmp_path: Path, profile: SpecProfile) -> None:
    market = Market(
        profile=profile,
        db=Database(default_db_url(tmp_path)),
        blobs=LocalBlobStore(tmp_path / "blobs"),
        index=_RecordingIndex,
    )
    try:
        recording = market.index.of(profile.profile_id)
        assert isinstance(recording, _RecordingIndex)
        query = cluster_spec(profile, seed=1)
        assert market.search(query).matches == ()
        assert recording.queries == [query]
    finally:
        market.close()


def _spread_clusters(n: int, dim: int, seed: int) -> list[LearnwareInfo]:
    """Noisy copies around 30 centres (as benchmarks/search.py makes them), a tenth DP-noisy."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dim))
    centres *= 0.7 / np.linalg.norm(centres, axis=1, keepdims=True)
    items = []
    for i in range(n):
        sigma = 0.05 if i % 10 == 0 else 0.0
        values = centres[i % 30] + (0.05 + sigma) * rng.standard_normal(dim)
        items.append(_learnware(i, values, sigma=sigma))
    return items


def _recall(found: SearchResult, exact: SearchResult) -> float:
    want = {m.learnware_id for m in exact.matches}
    return len(want & {m.learnware_id for m in found.matches}) / len(want)


def test_a_noisy_querys_beam_widens_with_its_noise_and_past_100k_rows_with_the_rows() -> None:
    # 1 + ceil(sigma^2 D * max(1, rows / 100k) ** 0.8): sigma 0.18, D 384 is 12.44 units of noise
    assert beam_widening(0.0, 384, 10**6) == 1  # an exact query: the plain beam
    assert beam_widening(0.18, 384, 10_000) == beam_widening(0.18, 384, 100_000) == 14
    assert beam_widening(0.18, 384, 10**6) == 1 + int(np.ceil(0.18**2 * 384 * 10**0.8)) == 80


@pytest.mark.parametrize("backend", ["hnsw", "ivf"])
def test_an_approximate_index_finds_what_the_exact_one_does_with_its_scores(backend: str) -> None:
    """A few thousand clustered specs (a third of them DP-noisy), through removes and adds:
    the same first match, recall@10 >= 0.99, and every returned match carries the exact
    index's distance, score, sd and bound."""
    items = _spread_clusters(3000, 64, seed=6)
    hnsw = APPROXIMATE[backend](64)
    hnsw.extend(IndexEntry.of(lw) for lw in items[:2800])
    exact = ExactIndex(items[:2800])
    for lw in items[:2800:20]:
        hnsw.remove(lw.card.id)
        exact.remove(lw.card.id)
    for lw in items[2800:]:
        hnsw.add(lw)
        exact.add(lw)
    assert len(hnsw) == len(exact)
    recalls = []
    for seed in range(8):
        for query in _queries(items[2800:] + items[1:2800:20], seed=seed):
            # the same scores for every match; the confidence is among the matches returned
            truth = [dataclasses.replace(m, confidence=0.0) for m in exact.search(query, top_k=100).matches]
            by_id = {m.learnware_id: m for m in truth}
            result = hnsw.search(query, top_k=10)
            found = [dataclasses.replace(m, confidence=0.0) for m in result.matches]
            assert found[0] == truth[0]
            assert all(by_id[m.learnware_id] == m for m in found)
            recalls.append(_recall(result, exact.search(query, top_k=10)))
    assert np.mean(recalls) >= 0.99


def _catalogued_market(tmp_path: Path, profile: SpecProfile, n: int, backend: str) -> Market:
    market = Market.open(tmp_path, profile=profile, index=backend)
    market.follower.stop()  # behind the index's back, also on a box slower than its poll
    rng = np.random.default_rng(7)
    for i in range(n):
        lw = _learnware(i, rng.standard_normal(profile.feature_dim) * 0.05, sigma=0.1 * (i % 7 == 0))
        spec = dataclasses.replace(lw.spec, profile_id=profile.profile_id)
        market.catalogue.add(dataclasses.replace(lw, spec=spec, package_sha256=f"{i:064x}"))
    return market


def _reopened(
    tmp_path: Path, profile: SpecProfile, caplog: pytest.LogCaptureFixture, backend: str
) -> tuple[Market, str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lmdock.market.index"):
        market = Market.open(tmp_path, profile=profile, index=backend)
    return market, caplog.text


@pytest.mark.parametrize("backend", ["hnsw", "ivf"])
def test_an_approximate_index_persists_and_is_rebuilt_when_stale(
    tmp_path: Path, profile: SpecProfile, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    first = _catalogued_market(tmp_path, profile, 200, backend)  # rows behind the index's back: stale
    first.close()
    market, log = _reopened(tmp_path, profile, caplog, backend)
    assert "catalogue changed" in log and len(market.index) == 200
    query = cluster_spec(profile, seed=3)
    before = market.search(query, top_k=20)
    market.index.remove("lw-5")  # as an unpublish does; close persists it
    market.close()

    market, log = _reopened(tmp_path, profile, caplog, backend)  # the catalogue still lists lw-5
    assert "catalogue changed" in log and "lw-5" in {
        m.learnware_id for m in market.index.search(query, top_k=200).matches
    }
    market.catalogue.remove("lw-5")
    market.index.remove("lw-5")
    market.close()

    market, log = _reopened(tmp_path, profile, caplog, backend)
    assert f"loaded the {backend.upper()} index of 199" in log
    scores = [dataclasses.replace(m, confidence=0.0) for m in market.search(query, top_k=19).matches]
    assert (
        scores
        == [  # the confidence is among the matches returned: without lw-5 it differs
            dataclasses.replace(m, confidence=0.0) for m in before.matches if m.learnware_id != "lw-5"
        ][:19]
    )
    market.close()

    (tmp_path / "index" / profile.profile_id / f"{backend}.json").write_text("{not json")
    market, log = _reopened(tmp_path, profile, caplog, backend)
    assert f"unreadable {backend}.json" in log and len(market.index) == 199
    market.close()

    # A lower max_sigma (policy: the same profile id) leaves the noisy specs out: another set.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lmdock.market.index"):
        market = Market.open(tmp_path, profile=dataclasses.replace(profile, max_sigma=0.05), index=backend)
    assert "catalogue changed" in caplog.text and len(market.index) == 199 - 29
    market.close()


def test_an_unknown_index_is_refused_by_name(tmp_path: Path, profile: SpecProfile) -> None:
    with pytest.raises(InvalidArgument, match="unknown index 'annoy'"):
        Market.open(tmp_path, profile=profile, index="annoy")


@pytest.mark.parametrize("backend", ["hnsw", "ivf"])
def test_an_approximate_index_returns_the_live_rows_when_most_are_removed(backend: str) -> None:
    items = _spread_clusters(60, 16, seed=8)
    index = APPROXIMATE[backend](16)
    index.extend(IndexEntry.of(lw) for lw in items)
    for lw in items[:57]:
        index.remove(lw.card.id)
    query = _queries(items, seed=9)[0]
    assert [m.learnware_id for m in index.search(query, top_k=10).matches] == [
        m.learnware_id for m in ExactIndex(items[57:]).search(query, top_k=10).matches
    ]
    for lw in items[57:]:
        index.remove(lw.card.id)
    assert len(index) == 0 and index.search(query, top_k=10, mixture=True).matches == ()


@pytest.mark.parametrize("backend", ["exact", "hnsw", "ivf"])
def test_adding_a_listed_id_replaces_it(backend: str) -> None:
    """As a replica's change log may re-apply an add: one match per id, the newer spec's."""
    items = _learnwares(30, seed=10)
    index: SpecIndex = ExactIndex(items) if backend == "exact" else APPROXIMATE[backend](DIM)
    if backend != "exact":
        for lw in items:
            index.add(lw)
    newer = _learnware(3, np.zeros(DIM), sigma=0.01)
    index.add(newer)
    query = _query(np.random.default_rng(11))
    found = index.search(query, top_k=100).matches
    assert len(index) == 30 and len(found) == 30
    expected = ExactIndex([*(lw for lw in items if lw.card.id != "lw-3"), newer]).search(query, top_k=100)
    assert {m.learnware_id: m for m in found} == {m.learnware_id: m for m in expected.matches}


def test_an_ivf_query_scans_a_share_of_the_lists_that_grows_with_its_noise() -> None:
    # (0.005 + 0.0015 sigma^2 D) of the lists, at least 8 and at most all of them
    assert probes(0.0, 384, 16384) == 82
    assert probes(0.18, 384, 16384) == int(np.ceil((0.005 + 0.0015 * 0.18**2 * 384) * 16384)) == 388
    assert probes(0.0, 384, 100) == 8 and probes(0.18, 384, 5) == 5


def test_an_ivf_index_retrains_its_lists_once_the_catalogue_has_outgrown_them(
    tmp_path: Path, profile: SpecProfile, caplog: pytest.LogCaptureFixture
) -> None:
    _catalogued_market(tmp_path, profile, 100, "ivf").close()  # 85 exact rows, behind its back
    market, log = _reopened(tmp_path, profile, caplog, "ivf")
    assert "catalogue changed" in log  # so the start trained its lists on those 85
    rng = np.random.default_rng(12)
    for i in range(100, 500):  # as publishing adds them: into the lists trained before
        lw = _learnware(i, rng.standard_normal(profile.feature_dim) * 0.05)
        spec = dataclasses.replace(lw.spec, profile_id=profile.profile_id)
        lw = dataclasses.replace(lw, spec=spec, package_sha256=f"{i:064x}")
        market.catalogue.add(lw)
        market.index.add(lw)
    market.close()
    market, log = _reopened(tmp_path, profile, caplog, "ivf")
    assert "its lists were trained on 85 rows and it holds 485" in log and len(market.index) == 500
    market.close()
