"""The market reads a safetensors header itself, where the file lies in the uploaded tar.

Since issue 21 an upload is checked without unpacking it: `safetensors_header.read_header`
replaced `safe_open`, so it must refuse every header safe_open refuses (each case below is
refused by both: safetensors itself is the oracle), a few more that safe_open lets through,
and any header whose tensors reach past the file's own bytes into the rest of the tar.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
import torch
from lmdock.client.connection import MarketClient
from lmdock.common.errors import InvalidArgument
from lmdock.server.auth import AccessPolicy
from lmdock.server.safetensors_header import read_header
from safetensors import SafetensorError, safe_open

from tests.helpers import adapter_variant, make_adapter
from tests.market_helpers import TINY_BERT, running_market
from tests.test_upload_checks import package, rejected

A = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
EIGHT = b"\0" * 8


def _file(header: bytes | str, data: bytes = EIGHT) -> bytes:
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw)) + raw + data


#: Refused by safe_open and by read_header.
BOTH_REFUSE = {
    "shorter than its length prefix": b"\x05\0\0",
    "header length past the end": struct.pack("<Q", 10**6) + b"{}",
    "not UTF-8": _file(b'{"\xff":' + json.dumps(A).encode() + b"}"),
    "lone surrogate": _file('{"__metadata__":{"k":"\\ud800"},"a":' + json.dumps(A) + "}"),
    "not an object": _file("[1]"),
    "trailing characters": _file(json.dumps({"a": A}) + "x"),
    "NaN": _file(json.dumps({"a": A})[:-1] + ',"b":NaN}'),
    "unknown dtype": _file(json.dumps({"a": {**A, "dtype": "f32"}})),
    "float in a shape": _file(json.dumps({"a": {**A, "shape": [2.0]}})),
    "negative extent": _file(json.dumps({"a": {**A, "shape": [-2]}})),
    "extent of 2^64": _file(json.dumps({"a": {**A, "shape": [2**64]}})),
    "shape missing": _file(json.dumps({"a": {"dtype": "F32", "data_offsets": [0, 8]}})),
    "three offsets": _file(json.dumps({"a": {**A, "data_offsets": [0, 8, 8]}})),
    "a gap before the data": _file(json.dumps({"a": {**A, "shape": [1], "data_offsets": [4, 8]}})),
    "overlapping tensors": _file(json.dumps({"a": A, "b": {**A, "data_offsets": [4, 12]}}), b"\0" * 12),
    "shape and bytes disagree": _file(json.dumps({"a": {**A, "shape": [3]}})),
    "data short of the end": _file(json.dumps({"a": A}), b"\0" * 12),
    "data past the end": _file(json.dumps({"a": A}), b"\0" * 4),
    "__metadata__ not strings": _file(json.dumps({"__metadata__": {"k": 1}, "a": A})),
    "nested too deeply": _file("[" * 100_000 + "]" * 100_000),
}
#: Accepted by safe_open, refused by read_header (a key twice, keys it ignores, non-floats).
ONLY_WE_REFUSE = {
    "a tensor twice": _file('{"a":' + json.dumps(A) + ',"a":' + json.dumps(A) + "}"),
    "an extra key": _file(json.dumps({"a": {**A, "x": 1}})),
    "a bool tensor": _file(json.dumps({"a": {**A, "dtype": "BOOL", "shape": [8]}})),
}


def _safe_open_accepts(data: bytes, tmp_path: Path) -> bool:
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    try:
        with safe_open(str(path), framework="pt") as weights:
            list(weights.keys())
        return True
    except SafetensorError:
        return False


def _read(data: bytes, start: int = 0):
    return read_header(io.BytesIO(data), start=start, size=len(data) - start, name="w.safetensors")


@pytest.mark.parametrize("case", sorted(BOTH_REFUSE))
def test_what_safe_open_refuses_is_refused(case: str, tmp_path: Path) -> None:
    assert not _safe_open_accepts(BOTH_REFUSE[case], tmp_path)
    with pytest.raises(InvalidArgument, match=r"not a valid safetensors file|adapters hold floats only"):
        _read(BOTH_REFUSE[case])


@pytest.mark.parametrize("case", sorted(ONLY_WE_REFUSE))
def test_what_safe_open_lets_through_is_refused_too(case: str, tmp_path: Path) -> None:
    assert _safe_open_accepts(ONLY_WE_REFUSE[case], tmp_path)
    with pytest.raises(InvalidArgument):
        _read(ONLY_WE_REFUSE[case])


def test_a_real_file_reads_as_safe_open_reads_it(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    tensors = {"b": torch.ones(3, 5, dtype=torch.bfloat16), "a": torch.zeros(7), "e": torch.zeros(0, 4)}
    save_file(tensors, path, metadata={"format": "pt"})
    prefix = b"tar bytes before the member"
    header = _read(prefix + path.read_bytes(), start=len(prefix))
    with safe_open(str(path), framework="pt") as weights:
        expected = {
            n: (weights.get_slice(n).get_dtype(), tuple(weights.get_slice(n).get_shape()))
            for n in weights.keys()  # noqa: SIM118 (a safe_open handle has keys(), no __iter__)
        }
    assert {t.name: (t.dtype, t.shape) for t in header.tensors} == expected
    assert header.data_offset == len(prefix) + 8 + int.from_bytes(path.read_bytes()[:8], "little")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_adapter(tiny_bert, tmp_path_factory.mktemp("adapter") / "a", base_name=TINY_BERT)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, profile):
    root = tmp_path_factory.mktemp("market")
    with running_market(
        root, profile, base_models={TINY_BERT: tiny_bert}, access=AccessPolicy.open_demo()
    ) as running:
        yield running


def test_a_header_reaching_past_its_member_into_the_tar_is_refused(
    market, adapter: Path, tmp_path: Path, profile
) -> None:
    """Its last tensor claims 1,024 bytes more than the file has: bytes that, read in place,
    would be the tar's padding and end blocks after the member."""
    hostile = adapter_variant(adapter, tmp_path / "hostile")
    weights = (hostile / "adapter_model.safetensors").read_bytes()
    length = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8 : 8 + length])
    end = max(e["data_offsets"][1] for n, e in header.items() if n != "__metadata__")
    header["beyond"] = {"dtype": "F32", "shape": [256], "data_offsets": [end, end + 1024]}
    raw = json.dumps(header).encode()
    (hostile / "adapter_model.safetensors").write_bytes(
        struct.pack("<Q", len(raw)) + raw + weights[8 + length :]
    )
    outcome = rejected(market, package(tmp_path, hostile, profile))
    assert outcome.startswith("INVALID_ARGUMENT") and "not a valid safetensors file" in outcome, outcome
    with MarketClient(market.address) as client:  # and the market still answers
        assert client.list() == []
