"""A v2 package checked by an independent implementation: Node.js with its own JSON, sha256 and
Ed25519 (tests/interop/verify_package.js, the script docs/verify-any-language.md shows), and
RFC 8785's examples through both serializers. Node is required: CI installs it (.ci/run)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from lmdock.common.canonical import jcs
from lmdock.common.errors import IntegrityError
from lmdock.common.package_reader import unpack_package, verify_folder
from lmdock.common.signing import generate_key

from tests.helpers import cluster_spec, make_adapter, make_package
from tests.test_canonical_json import APPENDIX_B, double

SCRIPT = Path(__file__).with_name("verify_package.js")
DOC = Path(__file__).parents[2] / "docs" / "verify-any-language.md"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    assert found, "Node.js (`node`) is required for the interop tests: apt-get install nodejs (.ci/run does)"
    return found


def run_node(node: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.fixture()
def unpacked(tmp_path: Path, tiny_bert: Path, profile) -> Path:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    package = tmp_path / "pkg.tar"
    make_package(
        package,
        adapter,
        key=generate_key(),
        spec=cluster_spec(profile, 3),
        base_model="tiny-bert",
        eval_scores={"accuracy": 1.0, "macro_f1": 1e-06},  # spelt differently by v1 and JCS
    )
    unpack_package(package, tmp_path / "pkg")
    return tmp_path / "pkg"


def test_node_verifies_a_v2_package_and_computes_the_profile_id(
    node: str, unpacked: Path, profile, tmp_path: Path
) -> None:
    manifest, signature = verify_folder(unpacked)
    assert manifest.format == "lmdock-learnware/2"
    profile_file = tmp_path / "profile.json"
    profile_file.write_text(profile.to_json())
    done = run_node(node, unpacked, profile_file)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "id": "test-learnware",
        "key_id": signature.key_id,
        "spec_profile_id": profile.profile_id,
        "profile_id": profile.profile_id,
    }


def test_node_refuses_what_lmdock_refuses(node: str, unpacked: Path) -> None:
    manifest_path = unpacked / "manifest.json"
    original = manifest_path.read_text()
    edits = {
        "a number": lambda m: m["eval_scores"].update(accuracy=0.99),
        "the format": lambda m: m.update(format="lmdock-learnware/1"),
    }
    for what, edit in edits.items():
        manifest = json.loads(original)
        edit(manifest)
        manifest_path.write_text(json.dumps(manifest))
        done = run_node(node, unpacked)
        assert done.returncode == 1 and "not verified" in done.stderr, what
        with pytest.raises(IntegrityError):
            verify_folder(unpacked)
    manifest_path.write_text(original)
    (unpacked / "adapter_config.json").write_text("{}")
    done = run_node(node, unpacked)
    assert done.returncode == 1 and "adapter_config.json does not match" in done.stderr


def test_rfc_8785_examples_through_node_and_python(node: str, tmp_path: Path) -> None:
    numbers = [double(h) for h, expected in APPENDIX_B if expected is not None]
    value = {
        "numbers": numbers,
        "keys": {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001f600": 5, "\u0080": 6, "\u00f6": 7},
        "string": '\u20ac$\u000f\nA\'B"\\\\"/',
        "literals": [None, True, False],
    }
    source = tmp_path / "value.json"
    source.write_text(json.dumps(value))  # repr of each double: exact in any correct parser
    done = run_node(node, "--jcs", source)
    assert done.returncode == 0, done.stderr
    assert done.stdout.encode("utf-8") == jcs(value)
    assert jcs(numbers) == ("[" + ",".join(e for _, e in APPENDIX_B if e is not None) + "]").encode()


def test_the_docs_show_the_tested_script() -> None:
    assert SCRIPT.read_text() in DOC.read_text()
