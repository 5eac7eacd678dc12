import json
import tarfile
from pathlib import Path

import pytest
from lmdock.common.errors import IntegrityError, InvalidArgument
from lmdock.common.package_reader import unpack_package, verify_folder
from lmdock.common.signing import generate_key, public_key_to_b64

from tests.helpers import as_v1_package, cluster_spec, make_adapter, make_package, tar_member
from tests.helpers import rewrite_tar as rewrite


@pytest.fixture()
def package(tmp_path: Path, tiny_bert: Path, profile) -> Path:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    out = tmp_path / "pkg.tar"
    make_package(out, adapter, key=generate_key(), spec=cluster_spec(profile, 1), base_model=str(tiny_bert))
    return out


def test_round_trip_verifies(package: Path, tmp_path: Path) -> None:
    manifest, signature = unpack_package(package, tmp_path / "out")
    assert manifest.card.id == "test-learnware"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
        "signature.json",
    ]
    verify_folder(tmp_path / "out", trusted_key=signature.public_key)


def test_packages_are_deterministic_apart_from_signature(tmp_path: Path, tiny_bert: Path, profile) -> None:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    key = generate_key()
    a = make_package(tmp_path / "a.tar", adapter, key=key, spec=cluster_spec(profile, 1), base_model="b")
    b = make_package(tmp_path / "b.tar", adapter, key=key, spec=cluster_spec(profile, 1), base_model="b")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert a.to_dict() == b.to_dict()


def test_tampered_weights_are_refused(package: Path, tmp_path: Path) -> None:
    with tarfile.open(package) as t:
        weights = bytearray(t.extractfile("adapter_model.safetensors").read())
    weights[-1] ^= 0xFF
    bad = rewrite(package, tmp_path / "bad.tar", change={"adapter_model.safetensors": bytes(weights)})
    with pytest.raises(IntegrityError, match="sha256"):
        unpack_package(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".unpack")] == []


def test_tampered_manifest_breaks_the_signature(package: Path, tmp_path: Path) -> None:
    with tarfile.open(package) as t:
        manifest = json.loads(t.extractfile("manifest.json").read())
    manifest["licence"] = "proprietary"
    bad = rewrite(package, tmp_path / "bad.tar", change={"manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(IntegrityError, match="signature"):
        unpack_package(bad, tmp_path / "out")


def test_wrong_pinned_key_is_refused(package: Path, tmp_path: Path) -> None:
    other = public_key_to_b64(generate_key().public_key())
    with pytest.raises(IntegrityError, match="expected"):
        unpack_package(package, tmp_path / "out", trusted_key=other)


@pytest.mark.parametrize(
    ("member", "data", "message"),
    [
        (tar_member("evil", tarfile.SYMTYPE, link="/etc/passwd"), None, "not a regular file"),
        (tar_member("../escape.json", size=2), b"{}", "not allowed"),
        (tar_member("sub/dir.json", size=2), b"{}", "not allowed"),
        (tar_member("model.bin", size=4), b"\x80\x04K.", "not allowed"),
        (tar_member("payload.py", size=4), b"pass", "not allowed"),
        (tar_member("notes.txt", size=2), b"hi", "not allowed"),
        (tar_member("extra.json", size=2), b"{}", "differ from the manifest"),
        (tar_member("manifest.json", size=2), b"{}", "twice"),
    ],
)
def test_forbidden_members_are_refused(package: Path, tmp_path: Path, member, data, message) -> None:
    bad = rewrite(package, tmp_path / "bad.tar", add=[(member, data)])
    with pytest.raises(InvalidArgument, match=message):
        unpack_package(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_file_and_garbage_are_refused(package: Path, tmp_path: Path) -> None:
    bad = rewrite(package, tmp_path / "bad.tar", drop=("adapter_config.json",))
    with pytest.raises(InvalidArgument, match="missing"):
        unpack_package(bad, tmp_path / "out")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(InvalidArgument, match="tar"):
        unpack_package(garbage, tmp_path / "out")


def test_a_v1_package_still_verifies(package: Path, tmp_path: Path, profile) -> None:
    """Packages written before format v2 (signed over the v1 canonical JSON) keep verifying."""
    key = generate_key()
    v1 = as_v1_package(package, tmp_path / "v1.tar", key, profile)
    trusted = public_key_to_b64(key.public_key())
    manifest, _ = unpack_package(v1, tmp_path / "out", trusted_key=trusted)
    assert manifest.format == "lmdock-learnware/1"
    assert manifest.spec.profile_id == profile.legacy_profile_id != profile.profile_id
    manifest.spec.check_against(profile)  # the v1 id names the same profile


def test_a_package_lmdock_wrote_before_v2_verifies(tmp_path: Path, profile) -> None:
    """tests/interop/v1-package.tar was written by lmdock's own `write_package` before format v2
    (commit 27e9f17; its weights file is a stand-in, the signature covers only hashes): a change
    to how a manifest is read or re-encoded that broke v1 signatures fails here."""
    golden = Path(__file__).parent / "interop" / "v1-package.tar"
    manifest, _ = unpack_package(golden, tmp_path / "out")
    assert manifest.format == "lmdock-learnware/1" and manifest.eval_scores["macro_f1"] == 1e-06
    assert manifest.spec.profile_id == "fb7d84bda60c9291" == profile.legacy_profile_id
    manifest.spec.check_against(profile)
