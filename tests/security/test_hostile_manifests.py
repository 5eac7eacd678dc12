"""Malformed manifests and signatures get InvalidArgument, never an unexpected exception.

Found by fuzzing (issue 14, item 6): a non-numeric or huge `files.size` or `eval_scores`, a
deeply nested manifest.json (RecursionError) and a non-base64 `public_key` reached the
servicer as ValueError / OverflowError / binascii.Error, which a server answers INTERNAL.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import Manifest
from lmdock.common.package_reader import unpack_package
from lmdock.common.signing import Signature, generate_key

from tests.helpers import cluster_spec, make_adapter, make_package, rewrite_tar


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, profile) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    out = root / "pkg.tar"
    make_package(
        out,
        make_adapter(tiny_bert, root / "a"),
        key=generate_key(),
        spec=cluster_spec(profile, 1),
        base_model="b",
    )
    return out


@pytest.fixture(scope="module")
def manifest(package: Path) -> dict:
    with tarfile.open(package) as tar:
        return json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]


def _files(manifest: dict, size: object) -> dict:
    return {"files": {k: {**v, "size": size} for k, v in manifest["files"].items()}}


@pytest.mark.parametrize(
    "change",
    [
        lambda m: _files(m, "twelve"),
        lambda m: _files(m, 1e400),  # json reads it as inf; int(inf) overflows
        lambda m: {"eval_scores": {"accuracy": "high"}},
        lambda m: {"eval_scores": ["not", "a", "mapping"]},
        lambda m: {"files": {"adapter_config.json": "no entry"}},
    ],
)
def test_bad_values_in_a_manifest_are_invalid_arguments(manifest: dict, change) -> None:
    with pytest.raises(InvalidArgument, match=r"manifest\.json is malformed"):
        Manifest.from_dict({**manifest, **change(manifest)})


def test_a_deeply_nested_manifest_is_refused(package: Path, tmp_path: Path) -> None:
    nested = ("[" * 100_000 + "]" * 100_000).encode()
    bad = rewrite_tar(package, tmp_path / "bad.tar", change={"manifest.json": nested})
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        unpack_package(bad, tmp_path / "out")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("public_key", "not base64!", "not a base64 Ed25519 public key"), ("signature", "%%%", "not base64")],
)
def test_a_signature_that_is_not_base64_is_refused(
    package: Path, field: str, value: str, message: str
) -> None:
    with tarfile.open(package) as tar:
        data = json.loads(tar.extractfile("signature.json").read())  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match=message):
        Signature.from_dict({**data, field: value})


@pytest.mark.parametrize(
    "value",
    [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" * 5000],
    ids=["nan", "inf", "-inf", "1e400", "5000 digits"],
)
def test_numbers_no_canonical_json_can_hold_are_refused(package: Path, tmp_path: Path, value: bytes) -> None:
    """Found by fuzzing: an extra field (or a training value) of NaN, 1e400 or an integer of
    5000 digits got past the manifest's parse and raised ValueError from canonical JSON or
    from int() -- INTERNAL on the market."""
    with tarfile.open(package) as tar:
        text = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
    bad = rewrite_tar(
        package, tmp_path / "bad.tar", change={"manifest.json": b'{"extra": ' + value + b", " + text[1:]}
    )
    with pytest.raises(InvalidArgument, match=r"manifest\.json is not valid UTF-8 JSON"):
        unpack_package(bad, tmp_path / "out")
