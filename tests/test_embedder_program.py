"""The embedder without transformers on its path: the fast tokenizer and the traced program give
what transformers' own tokenizer and model give, and the program is kept once, owner-only."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest
import torch
from lmdock.client import embedder_program
from lmdock.client.embedder import Embedder, mean_pool
from lmdock.common.embedder_files import embedder_dir, embedder_sha256
from lmdock.common.profile import SpecProfile
from lmdock.lab.refdata import DATA_DIR

EDGE_TEXTS = ["", " ", "Ünïcödé ﬁ 中文字符 😀 \u200b", "a" * 5000, "word " * 600, "x"]


def _texts() -> list[str]:
    lines = (DATA_DIR / "medquad.jsonl").read_text().splitlines()[:70]
    return [json.loads(line)["text"] for line in lines] + EDGE_TEXTS


@pytest.fixture(scope="module")
def transformers_side(profile: SpecProfile):  # type: ignore[no-untyped-def]
    from transformers import AutoModel, AutoTokenizer

    folder = embedder_dir(profile.embedder_id)
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(
        folder, dtype=torch.float32
    ).eval()


def test_tokens_and_vectors_equal_transformers(profile: SpecProfile, transformers_side) -> None:  # type: ignore[no-untyped-def]
    tokenizer, model = transformers_side
    embedder = Embedder(profile)
    texts = _texts()
    assert isinstance(embedder.model, torch.jit.ScriptModule)
    ours = embedder.embed(texts, batch_size=16)
    theirs = np.empty_like(ours)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # the embedder's batches
    with torch.inference_mode():
        for start in range(0, len(order), 16):
            idx = order[start : start + 16]
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=profile.max_tokens,
                return_tensors="pt",
            )
            encoded = embedder.tokenizer.encode_batch([texts[i] for i in idx])
            assert [e.ids for e in encoded] == batch["input_ids"].tolist()
            assert [e.attention_mask for e in encoded] == batch["attention_mask"].tolist()
            theirs[idx] = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]).numpy()
    assert np.abs(ours - theirs).max() < 1e-5


def test_the_program_is_kept_once_and_owner_only(profile: SpecProfile) -> None:
    Embedder(profile)
    path = embedder_program.program_path(embedder_sha256(profile.embedder_id))
    assert path.is_file()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = path.stat().st_mtime_ns
    Embedder(profile)
    assert path.stat().st_mtime_ns == written  # loaded, not traced again
    assert not list(path.parent.glob(".trace-*"))


def test_a_damaged_program_is_traced_again(profile: SpecProfile) -> None:
    path = embedder_program.program_path(embedder_sha256(profile.embedder_id))
    Embedder(profile)
    path.write_bytes(b"not a program")
    embedder = Embedder(profile)
    assert isinstance(embedder.model, torch.jit.ScriptModule)
    assert path.stat().st_size > 1_000_000


def test_a_trace_that_differs_is_not_kept(
    profile: SpecProfile, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LMDOCK_MODEL_CACHE", str(tmp_path))
    monkeypatch.setattr(embedder_program, "_TOLERANCE", -1.0)  # no trace can pass
    embedder = Embedder(profile)
    assert isinstance(embedder.model, embedder_program.Encoder)
    assert not embedder_program.program_path(embedder_sha256(profile.embedder_id)).exists()
    assert embedder.embed(["a short text"]).shape == (1, profile.embedding_dim)
