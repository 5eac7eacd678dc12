"""A manifest's `format` decides which bytes its signature covers (v1: the first canonical
JSON, v2: RFC 8785), and nothing else does: a package re-labelled as the other format, or any
field changed under either, is refused; no verifier falls back to the other encoding."""

import json
import tarfile
from pathlib import Path

import pytest
from lmdock.common.errors import IntegrityError, InvalidArgument
from lmdock.common.package_reader import unpack_package
from lmdock.common.signing import generate_key

from tests.helpers import as_v1_package, cluster_spec, make_adapter, make_package, rewrite_tar


@pytest.fixture()
def packages(tmp_path: Path, tiny_bert: Path, profile) -> dict[str, Path]:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    key = generate_key()
    v2 = tmp_path / "v2.tar"
    # 1.0 and 1e-06 are spelt differently by the two encodings
    spec = cluster_spec(profile, 1)
    make_package(v2, adapter, key=key, spec=spec, base_model="b", eval_scores={"f1": 1e-06})
    return {"v2": v2, "v1": as_v1_package(v2, tmp_path / "v1.tar", key, profile)}


def edited(package: Path, out: Path, edit) -> Path:
    with tarfile.open(package) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    edit(manifest)
    return rewrite_tar(package, out, change={"manifest.json": json.dumps(manifest).encode()})


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_relabelling_or_editing_a_signed_manifest_is_refused(packages, tmp_path: Path, version: str) -> None:
    unpack_package(packages[version], tmp_path / "ok")  # as signed: verifies
    other = {"v1": "lmdock-learnware/2", "v2": "lmdock-learnware/1"}[version]
    for what, edit in {
        "format": lambda m: m.update(format=other),
        "score": lambda m: m["eval_scores"].update(f1=2e-06),
        "licence": lambda m: m.update(licence="proprietary"),
    }.items():
        bad = edited(packages[version], tmp_path / f"{what}.tar", edit)
        with pytest.raises(IntegrityError, match="signature does not verify"):
            unpack_package(bad, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_an_unknown_format_is_refused_before_any_signature_check(packages, tmp_path: Path) -> None:
    bad = edited(packages["v2"], tmp_path / "v3.tar", lambda m: m.update(format="lmdock-learnware/3"))
    with pytest.raises(InvalidArgument, match="format 'lmdock-learnware/3' is not supported"):
        unpack_package(bad, tmp_path / "out")
