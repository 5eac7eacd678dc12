"""Unsigned packages and `sign_package`, the manifest's DP statement, learnware card files."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from lmdock.client.publish.package import load_card
from lmdock.common.card import Card
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import Manifest, TaskInfo, write_package
from lmdock.common.package_reader import sign_package, unpack_package
from lmdock.common.signing import generate_key, key_id, public_key_to_b64

from tests.helpers import LABELS, cluster_spec, make_adapter, make_package


def members(package: Path) -> list[str]:
    with tarfile.open(package) as tar:
        return tar.getnames()


def test_unsigned_package_is_refused_until_signed(tiny_bert: Path, tmp_path: Path, profile) -> None:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    package = tmp_path / "p.tar"
    make_package(package, adapter, key=None, spec=cluster_spec(profile, 1), base_model=str(tiny_bert))
    assert "signature.json" not in members(package)
    with pytest.raises(InvalidArgument, match="not signed"):
        unpack_package(package, tmp_path / "out")

    key = generate_key()
    manifest, signature, previous = sign_package(package, key)
    assert previous == ""
    assert signature.public_key == public_key_to_b64(key.public_key())
    unpacked, _ = unpack_package(package, tmp_path / "out", trusted_key=signature.public_key)
    assert unpacked.to_dict() == manifest.to_dict()
    # signing at write time and signing later give the same bytes
    direct = tmp_path / "direct.tar"
    make_package(direct, adapter, key=key, spec=cluster_spec(profile, 1), base_model=str(tiny_bert))
    assert direct.read_bytes() == package.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_resigning_replaces_the_signature_and_says_so(
    tiny_bert: Path, tmp_path: Path, profile, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmdock.client import cli
    from lmdock.common.signing import save_private_key

    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    package = tmp_path / "p.tar"
    make_package(
        package, adapter, key=(first := generate_key()), spec=cluster_spec(profile, 1), base_model="b"
    )
    _, signature, previous = sign_package(package, other := generate_key())
    assert previous == key_id(public_key_to_b64(first.public_key())) != signature.key_id
    assert members(package).count("signature.json") == 1
    _, unpacked = unpack_package(package, tmp_path / "out")
    assert unpacked.public_key == public_key_to_b64(other.public_key()) == signature.public_key
    save_private_key(other, key_file := tmp_path / "other.key")
    capsys.readouterr()
    assert cli.main(["sign", str(package), "--key", str(key_file)]) == 0
    said = capsys.readouterr().out
    assert f"was already signed by key {signature.key_id}: signed it again with the same key" in said


def _manifest_with(training: dict, tiny_bert: Path, tmp_path: Path, profile) -> Manifest:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    return write_package(
        tmp_path / "p.tar",
        files={f: adapter / f for f in ("adapter_config.json", "adapter_model.safetensors")},
        key=None,
        card=Card(id="dp-test", name="dp", domain="d", licence="MIT", publisher="p"),
        base_model="b",
        task=TaskInfo("classification", LABELS),
        spec=cluster_spec(profile, 1),
        training=training,
    )


@pytest.mark.parametrize(
    "training",
    [
        {"dp": "yes"},
        {"dp": True},
        {"dp": True, "epsilon": 0, "delta": 1e-6},
        {"dp": True, "epsilon": float("inf"), "delta": 1e-6},
        {"dp": True, "epsilon": 1.0},
        {"dp": True, "epsilon": 1.0, "delta": 1.5},
        {"dp": True, "epsilon": True, "delta": 1e-6},
    ],
)
def test_a_dp_claim_must_state_its_budget(training: dict, tiny_bert: Path, tmp_path: Path, profile) -> None:
    with pytest.raises(InvalidArgument, match=r"training\."):
        _manifest_with(training, tiny_bert, tmp_path, profile)


def test_the_dp_statement_round_trips(tiny_bert: Path, tmp_path: Path, profile) -> None:
    manifest = _manifest_with({"dp": True, "epsilon": 3.0, "delta": 1e-6}, tiny_bert, tmp_path, profile)
    assert manifest.dp_trained and manifest.dp_budget == (3.0, 1e-6)
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again.dp_budget == (3.0, 1e-6)
    plain = _manifest_with({}, tiny_bert, tmp_path, profile)
    assert not plain.dp_trained and plain.dp_budget is None


def test_cards_from_toml_json_and_flags(tmp_path: Path) -> None:
    toml = tmp_path / "card.toml"
    toml.write_text(
        'id = "med-qa"\ndomain = "medical"\nlicence = "CC-BY-4.0"\npublisher = "h"\ntags = ["a"]\n'
    )
    card = load_card(toml, {"domain": "", "publisher": "hospital", "tags": []})
    assert (card.id, card.name, card.domain, card.publisher, card.tags) == (
        "med-qa",
        "med-qa",
        "medical",
        "hospital",
        ("a",),
    )
    js = tmp_path / "card.json"
    js.write_text(json.dumps({"id": "x-y", "domain": "d", "licence": "MIT", "publisher": "p", "name": "X"}))
    assert load_card(js, {}).name == "X"
    assert load_card(None, {"id": "a-b", "domain": "d", "licence": "MIT", "publisher": "p"}).id == "a-b"


def test_a_card_is_checked_once_and_keeps_the_manifest_field_order() -> None:
    card = Card(id="med-qa", name="Med QA", domain="medical", licence="MIT", publisher="h", tags=("a",))
    order = ["id", "name", "version", "domain", "tags", "description", "licence", "publisher"]
    assert list(card.to_dict()) == order
    assert Card.from_dict(card.to_dict() | {"base_model": "b"}) == card
    with pytest.raises(InvalidArgument, match="learnware id"):
        Card(id="Bad Id", name="n", domain="d", licence="MIT", publisher="p")
    for field in ("name", "domain", "licence", "publisher"):
        with pytest.raises(InvalidArgument, match=f"field '{field}'"):
            Card(**(card.to_dict() | {"tags": (), field: " "}))
    with pytest.raises(InvalidArgument, match="learnware id"):  # refused before any spec is computed
        load_card(None, {"id": "A", "domain": "d", "licence": "MIT", "publisher": "p"})


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('id = "a-b"\ncolour = "red"\n', ".toml", "unknown card fields"),
        ('id = "a-b"\n', ".toml", "needs domain, licence, publisher"),
        ("id = ", ".toml", "not valid TOML"),
        ("[1, 2]", ".json", "must hold an object"),
    ],
)
def test_bad_cards_are_refused_clearly(content: str, suffix: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / f"card{suffix}"
    path.write_text(content)
    with pytest.raises(InvalidArgument, match=message):
        load_card(path, {})


def test_signing_without_a_key_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmdock.client import cli

    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    (tmp_path / "p.tar").write_bytes(b"")
    assert cli.main(["sign", str(tmp_path / "p.tar")]) == 1
    assert "lmdock keys gen" in capsys.readouterr().err
    assert cli.main(["keys", "gen", "--json"]) == 0
    key = json.loads(capsys.readouterr().out)
    assert (tmp_path / "home" / "keys" / "publisher.key").stat().st_mode & 0o077 == 0  # owner only
    assert cli.main(["keys", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == key
