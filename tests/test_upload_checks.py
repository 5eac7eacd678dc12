"""Every upload rule, each broken by one crafted package; a rejected upload leaves nothing."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from lmdock.client.connection import MarketClient
from lmdock.common.signing import generate_key
from lmdock.server.auth import AccessPolicy
from lmdock.server.market import MarketLimits
from lmdock.server.safetensors_header import read_header
from lmdock.server.tensor_scan import non_finite_tensor

from tests.helpers import (
    adapter_variant,
    cluster_spec,
    make_adapter,
    make_package,
    rewrite_tar,
    tar_member,
)
from tests.market_helpers import TINY_BERT, running_market, status_of

TINY_LLAMA = "tiny-llama"
KEY = generate_key()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_adapter(tiny_bert, tmp_path_factory.mktemp("adapter") / "a", base_name=TINY_BERT)


@pytest.fixture()
def market(tmp_path: Path, tiny_bert: Path, tiny_llama: Path, profile):
    with running_market(
        tmp_path / "market",
        profile,
        base_models={TINY_BERT: tiny_bert, TINY_LLAMA: tiny_llama},
        access=AccessPolicy.open_demo(),
        limits=MarketLimits(max_package_bytes=2 * 1024 * 1024),
    ) as running:
        yield running


def package(tmp: Path, adapter: Path, profile, name: str = "pkg", **fields) -> Path:
    out = tmp / f"{name}.tar"
    fields.setdefault("spec", cluster_spec(profile, 1))
    fields.setdefault("base_model", TINY_BERT)
    make_package(out, adapter, key=fields.pop("key", KEY), **fields)
    return out


def assert_nothing_left(running) -> None:
    market = running.market
    assert market.catalogue.list(page_size=10).items == ()
    assert len(market.index) == 0
    assert [p for p in market.blobs.root.rglob("*") if p.is_file()] == []
    assert market.signing_keys.list() == []


def rejected(running, path: Path) -> str:
    """The upload's status and message; checks that nothing of it remains."""
    with MarketClient(running.address) as client:
        try:
            client.upload(path)
        except Exception as exc:
            assert_nothing_left(running)
            return f"{exc.status}: {exc}"
    raise AssertionError("the market accepted a bad package")


def _with_tensor(name_part: str, make):
    def change(weights: dict) -> dict:
        key = next(k for k in sorted(weights) if name_part in k)
        return {**weights, key: make(weights[key])}

    return change


def _nan(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def _inf(t):
    t = t.clone()
    t.view(-1)[-1] = float("inf")
    return t


ADAPTER_CASES = {
    "peft type": ({"peft_type": "IA3"}, None, "peft_type must be 'LORA'"),
    "base model in config": ({"base_model_name_or_path": "other"}, None, "names base model 'other'"),
    "task type": ({"task_type": "CAUSAL_LM"}, None, "task_type 'CAUSAL_LM' does not fit"),
    "target module": ({"target_modules": ["query", "warp_drive"]}, None, "'warp_drive' does not exist"),
    "target pattern": ({"target_modules": r".*\.nothing"}, None, "target_modules must be a list"),
    "rank vs shapes": ({"r": 8}, None, "has shape [4, 32], base model 'tiny-bert' needs [8, 32]"),
    "NaN": (None, _with_tensor("lora_A", _nan), "contains NaN or Inf"),
    "Inf": (None, _with_tensor("lora_B", _inf), "contains NaN or Inf"),
    "integer tensor": (None, _with_tensor("lora_A", lambda t: t.to(torch.int32)), "floats only"),
    # torch cannot test float8 for NaN: refused from the header, never INTERNAL
    "float8 tensor": (None, _with_tensor("lora_A", lambda t: t.to(torch.float8_e4m3fn)), "dtype F8_E4M3"),
    "wrong shape": (
        None,
        _with_tensor("lora_B", lambda t: torch.zeros(t.shape[0] + 1, t.shape[1])),
        "has shape",
    ),
    "foreign tensor": (
        None,
        lambda w: {**w, "base_model.model.extra.weight": torch.zeros(2)},
        "is not a weight",
    ),
    "missing tensor": (None, lambda w: dict(list(w.items())[1:]), "lacks 1 tensors"),
}


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
def test_bad_adapters_are_refused(case: str, market, adapter: Path, tmp_path: Path, profile) -> None:
    config, tensors, message = ADAPTER_CASES[case]
    bad = adapter_variant(adapter, tmp_path / "bad-adapter", config=config, tensors=tensors)
    outcome = rejected(market, package(tmp_path, bad, profile))
    assert outcome.startswith("INVALID_ARGUMENT") and message in outcome, outcome


def test_unknown_base_model_is_refused(market, adapter: Path, tmp_path: Path, profile) -> None:
    bad = adapter_variant(adapter, tmp_path / "bad", config={"base_model_name_or_path": "/etc"})
    outcome = rejected(market, package(tmp_path, bad, profile, base_model="/etc"))
    assert "INVALID_ARGUMENT" in outcome and "'/etc' is not registered" in outcome


def test_classification_adapter_on_a_causal_lm_is_refused(
    market, adapter: Path, tmp_path: Path, profile
) -> None:
    bad = adapter_variant(adapter, tmp_path / "bad", config={"base_model_name_or_path": TINY_LLAMA})
    outcome = rejected(market, package(tmp_path, bad, profile, base_model=TINY_LLAMA))
    assert outcome.startswith("INVALID_ARGUMENT") and "does not exist in base model 'tiny-llama'" in outcome


def test_not_a_safetensors_file_is_refused(market, adapter: Path, tmp_path: Path, profile) -> None:
    bad = adapter_variant(adapter, tmp_path / "bad")
    (bad / "adapter_model.safetensors").write_bytes(b"\x80\x04K." * 100)  # a pickle, renamed
    outcome = rejected(market, package(tmp_path, bad, profile))
    assert "not a valid safetensors file" in outcome


@pytest.mark.parametrize(
    ("member", "data", "message"),
    [
        (tar_member("adapter_model.bin", size=4), b"\x80\x04K.", "not allowed"),
        (tar_member("loader.py", size=4), b"pass", "not allowed"),
        (tar_member("inner.tar", size=4), b"tar!", "not allowed"),
        (tar_member("../escape.json", size=2), b"{}", "not allowed"),
        (tar_member("evil", tarfile.SYMTYPE, link="/etc/passwd"), None, "not a regular file"),
        (tar_member("notes.md", size=2), b"hi", "not allowed"),
    ],
)
def test_forbidden_files_are_refused(market, adapter, tmp_path: Path, profile, member, data, message) -> None:
    bad = rewrite_tar(package(tmp_path, adapter, profile), tmp_path / "bad.tar", add=[(member, data)])
    outcome = rejected(market, bad)
    assert outcome.startswith("INVALID_ARGUMENT") and message in outcome


def test_spec_must_fit_the_profile(market, adapter: Path, tmp_path: Path, profile) -> None:
    for change, message in (({"profile_id": "ffffffffffffffff"}, "profile"), ({"version": 99}, "version")):
        spec = cluster_spec(profile, 1)
        for key, value in change.items():
            object.__setattr__(spec, key, value)
        outcome = rejected(market, package(tmp_path, adapter, profile, spec=spec))
        assert outcome.startswith("INVALID_ARGUMENT") and message in outcome, outcome
    short = cluster_spec(profile, 1)
    object.__setattr__(short, "values", np.zeros(7, dtype=np.float32))
    outcome = rejected(market, package(tmp_path, adapter, profile, spec=short))
    assert outcome.startswith("INVALID_ARGUMENT") and "dimension" in outcome, outcome


def test_metadata_and_size_limits(market, adapter: Path, tmp_path: Path, profile) -> None:
    outcome = rejected(market, package(tmp_path, adapter, profile, tags=tuple(f"t{i}" for i in range(40))))
    assert "at most 32 tags" in outcome
    big = adapter_variant(
        adapter, tmp_path / "big", tensors=lambda w: {**w, "padding": torch.zeros(1024 * 1024)}
    )
    assert rejected(market, package(tmp_path, big, profile, name="big")).startswith("RESOURCE_EXHAUSTED")


def test_signature_must_verify(market, adapter: Path, tmp_path: Path, profile) -> None:
    good = package(tmp_path, adapter, profile)
    with tarfile.open(good) as t:
        manifest = json.loads(t.extractfile("manifest.json").read())
    manifest["licence"] = "proprietary"
    bad = rewrite_tar(good, tmp_path / "bad.tar", change={"manifest.json": json.dumps(manifest).encode()})
    outcome = rejected(market, bad)
    assert outcome.startswith("DATA_LOSS") and "signature does not verify" in outcome


def test_good_packages_pass_and_duplicates_do_not(
    market, adapter, tiny_llama, tmp_path: Path, profile
) -> None:
    llama_adapter = make_adapter(tiny_llama, tmp_path / "llama", kind="generation", base_name=TINY_LLAMA)
    with MarketClient(market.address) as client:
        first = client.upload(package(tmp_path, adapter, profile, learnware_id="bert-lw"))
        client.upload(
            package(
                tmp_path, llama_adapter, profile, "llama", learnware_id="llama-lw", base_model=TINY_LLAMA,
                kind="generation",
            )
        )  # fmt: skip
        assert (
            first.signing_key_id == market.market.signing_keys.list("tester")[0].key_id
        )  # first key trusted
        again = package(tmp_path, adapter, profile, learnware_id="bert-lw")
        assert status_of(lambda: client.upload(again)) == "ALREADY_EXISTS"
        same_id = package(
            tmp_path, adapter, profile, "other", learnware_id="bert-lw", spec=cluster_spec(profile, 5)
        )
        assert status_of(lambda: client.upload(same_id)) == "ALREADY_EXISTS"
        stranger = package(tmp_path, adapter, profile, "stranger", learnware_id="x-lw", key=generate_key())
        assert status_of(lambda: client.upload(stranger)) == "PERMISSION_DENIED"  # not the publisher's key
        assert [lw.card.id for lw in client.list()] == ["bert-lw", "llama-lw"]
    assert [p for p in (market.market.blobs.root / "tmp").rglob("*") if p.is_file()] == []


def _scan(path: Path, **options) -> str | None:
    with path.open("rb") as fh:
        header = read_header(fh, start=0, size=path.stat().st_size, name=path.name)
    return non_finite_tensor(path, header, **options)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_the_tensor_scan_finds_nan_and_inf_in_every_float_dtype(tmp_path: Path, dtype) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    ok = {"empty": torch.zeros(0, dtype=dtype), "big": torch.full((3, 101), 65504.0, dtype=dtype)}
    save_file(ok, path)
    assert _scan(path, block_bytes=64) is None
    for bad in (float("nan"), float("inf"), float("-inf")):
        poisoned = ok["big"].clone()
        poisoned[2, -1] = bad  # the last value of the last block
        save_file({**ok, "big": poisoned}, path)
        assert _scan(path, block_bytes=64) == "big"
    save_file({"empty": ok["empty"]}, path)
    assert _scan(path) is None
