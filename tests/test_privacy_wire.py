"""Nothing but the spec on the wire: every byte the client sends during search + pull, recorded
against a real market on port 0, holds no text, no label and no un-noised vector; nor do the
logs, at every level. And a profile whose embedder the client cannot reproduce is refused."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient, WireRecorder
from lmdock.client.embedder import Embedder
from lmdock.client.ledger import Ledger
from lmdock.client.operations import pull, search_task
from lmdock.client.spec_release import features_of, public_spec
from lmdock.common.errors import ProfileMismatch
from lmdock.common.profile_factory import make_profile
from lmdock.common.signing import generate_key
from lmdock.lab.embedded import embedded_market
from lmdock.lab.refdata import load_split

from tests.helpers import cluster_spec, make_adapter, make_package

SOURCES = {
    "medical-questions": "medquad",
    "banking-intents": "banking77",
    "math-subjects": "math_competition",
}


def windows(text: str, size: int = 8) -> set[bytes]:
    data = text.encode("utf-8")
    return {data[i : i + size] for i in range(len(data) - size + 1)}


def float_windows(rows: np.ndarray, width: int = 4) -> set[bytes]:
    """Every run of `width` consecutive float32 components (16 bytes) of every row."""
    raw = np.ascontiguousarray(rows, dtype="<f4")
    return {
        raw[i, j : j + width].tobytes() for i in range(raw.shape[0]) for j in range(raw.shape[1] - width + 1)
    }


@pytest.fixture(scope="module")
def real_market(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path):
    """A market holding three learnwares whose exact specs summarise real texts."""
    profile = make_profile()
    root = tmp_path_factory.mktemp("wire")
    adapter = make_adapter(tiny_bert, root / "adapter")
    embedder = Embedder(profile)
    key = generate_key()
    packages = []
    for learnware_id, sample in SOURCES.items():
        texts, _ = load_split(sample, "train")
        path = root / f"{learnware_id}.tar"
        spec = public_spec(texts[:80], profile, embedder=embedder)
        make_package(path, adapter, key=key, spec=spec, learnware_id=learnware_id, base_model=str(tiny_bert))
        packages.append(path)
    with embedded_market(root / "market", profile=profile) as (address, _):
        with MarketClient(address) as publisher:
            for package in packages:
                publisher.upload(package)
        yield address, profile, embedder, root


def test_only_the_noised_spec_leaves_the_client(real_market, caplog: pytest.LogCaptureFixture) -> None:
    address, profile, embedder, root = real_market
    texts, labels = load_split("medquad", "task")
    texts, labels = texts[:60], labels[:60]
    recorder = WireRecorder(keep=True)
    caplog.set_level(logging.DEBUG)
    with MarketClient(address, recorder=recorder) as client:
        outcome = search_task(
            client, texts, epsilon=1.0, delta=1e-6, top_k=3, ledger=Ledger(root / "ledger.jsonl")
        )
        spec, result = outcome.spec, outcome.result
        assert result.matches[0].learnware_id == "medical-questions"
        pull(client, AdapterCache(root / "cache"), result.matches[0].learnware_id)
    sent = b"".join(recorder.messages)
    assert recorder.bytes_sent == len(sent) > 384 * 4  # the spec went out, and everything is recorded

    # no 8+ character piece of any text or label
    leaked = [w for t in [*texts, *labels] for w in windows(t) if w in sent]
    assert leaked == []
    # no un-noised vector: neither an embedding, nor a feature row, nor the exact kernel mean
    features = features_of(texts, profile, embedder=embedder)
    exact_mean = features.mean(axis=0, keepdims=True)
    vectors = float_windows(embedder.embed(texts)) | float_windows(features) | float_windows(exact_mean)
    assert [v for v in vectors if v in sent] == []
    # what did go out is the mean plus noise of the calibrated size
    noise = spec.values.astype(np.float64) - exact_mean[0]
    assert noise.std() == pytest.approx(spec.privacy.sigma, rel=0.25)

    # the logs, at every level, hold no text and no vector
    messages = [r.getMessage() for r in caplog.records]
    assert any("released a spec" in m for m in messages)  # the capture works
    log_text = "\n".join(messages).encode()
    assert [w for t in [*texts, *labels] for w in windows(t) if w in log_text] == []
    assert not re.search(rb"(-?\d+\.\d{3,}[,\s]+){6}", log_text)  # no run of printed floats
    assert [v for v in vectors if v in log_text] == []


def test_a_profile_with_another_embedder_is_refused_before_any_spec(tmp_path: Path, tiny_bert: Path) -> None:
    forged = make_profile(embedder_hash="f" * 64)
    with pytest.raises(ProfileMismatch, match="weight hash"):
        Embedder(forged)
    ledger = Ledger(tmp_path / "ledger.jsonl")
    recorder = WireRecorder(keep=True)
    texts, _ = load_split("medquad", "task")
    listed = tmp_path / "listed.tar"  # a learnware under the forged profile: the market is not empty
    adapter = make_adapter(tiny_bert, tmp_path / "a")
    make_package(listed, adapter, key=generate_key(), spec=cluster_spec(forged, 1), base_model=str(tiny_bert))
    with embedded_market(tmp_path / "market", profile=forged) as (address, _):
        with MarketClient(address) as publisher:
            publisher.upload(listed)
        with MarketClient(address, recorder=recorder) as client, pytest.raises(ProfileMismatch):
            search_task(client, texts[:40], epsilon=1.0, delta=1e-6, ledger=ledger)
    assert len(recorder.messages) == 2  # the listing and profile requests, and no spec
    assert ledger.state().entries == ()  # nothing released, nothing debited
