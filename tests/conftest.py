"""Shared fixtures: the real default profile, tiny models built from configs, real markets."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from lmdock.common.embedder_files import DEFAULT_EMBEDDER, embedder_dir
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import make_profile

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One model cache for the session (converted base models, the embedder's traced program),
    so no test writes to the user's ~/.cache and each is made once; subprocesses inherit it."""
    cache = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("LMDOCK_MODEL_CACHE")
    os.environ["LMDOCK_MODEL_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("LMDOCK_MODEL_CACHE", None)
    else:
        os.environ["LMDOCK_MODEL_CACHE"] = previous


@pytest.fixture(scope="session")
def profile() -> SpecProfile:
    return make_profile()


def _copy_tokenizer(dest: Path) -> None:
    src = embedder_dir(DEFAULT_EMBEDDER)
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, dest / name)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT encoder built from a config (random weights), with MiniLM's tokenizer."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    _copy_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama causal LM built from a config (random weights), with MiniLM's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    _copy_tokenizer(folder)
    return folder


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture()
def market_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "market"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """One PostgreSQL cluster for the session; fails (never skips) without PostgreSQL."""
    from tests.pg import PgCluster

    try:
        cluster = PgCluster()
        cluster.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty market database: SQLite in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'market.sqlite'}"
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    yield cluster.url(name)
    cluster.drop_database(name)


@pytest.fixture(scope="session")
def smollm2(model_cache: Path) -> Path:
    """The packaged SmolLM2-135M-Instruct, converted once per session into the session's model
    cache with every connection off the machine refused (conversion must need no network)."""
    import socket

    from lmdock.common.base_model_files import SMOLLM2, packaged_base_dir

    connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address) -> None:  # type: ignore[no-untyped-def]
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise OSError(f"network is off in tests: connect to {address[0]} refused")
        connect(sock, address)

    socket.socket.connect = loopback_only  # type: ignore[method-assign]
    try:
        folder = packaged_base_dir(SMOLLM2)
    finally:
        socket.socket.connect = connect  # type: ignore[method-assign]
    return folder
