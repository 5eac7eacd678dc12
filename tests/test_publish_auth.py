"""Publishing on an authenticated market through the CLI: `lmdock keys register|list|revoke`,
`lmdock publish`'s checks of who publishes with which key, `lmdock unpublish`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmdock.common.signing import load_private_key
from lmdock.server.identity import Role

from tests.helpers import cluster_spec, make_adapter, make_package
from tests.market_helpers import TINY_BERT, running_market
from tests.test_publishing_flow import run_cli


@pytest.fixture()
def world(tiny_bert: Path, tmp_path: Path, profile):
    """A market that needs credentials, keys for everyone, and a signing key on disk."""
    with running_market(tmp_path / "market", profile, base_models={TINY_BERT: tiny_bert}) as running:
        keys = {
            who: running.market.api_keys.create(who if role != Role.ADMIN else "root", role)[1]
            for who, role in (
                ("acme", Role.PUBLISHER),
                ("globex", Role.PUBLISHER),
                ("carol", Role.CONSUMER),
                ("root", Role.ADMIN),
            )
        }
        yield running.address, keys, make_adapter(tiny_bert, tmp_path / "adapter", base_name=TINY_BERT)


def lmdock(capsys, *argv: str, key: str | None = None) -> tuple[int, str, str]:
    return run_cli(capsys, *argv, *(("--api-key", key) if key else ()))


def package(tmp_path: Path, adapter: Path, key_file: Path, name: str, profile) -> str:
    """acme's package `name`, signed with the key in `key_file`."""
    path = tmp_path / f"{name}.tar"
    make_package(
        path,
        adapter,
        key=load_private_key(key_file),
        spec=cluster_spec(profile, len(name)),
        learnware_id=name,
        base_model=TINY_BERT,
        publisher="acme",
    )
    return str(path)


@pytest.mark.slow
def test_register_publish_unpublish_as_a_publisher(world, tmp_path: Path, profile, capsys) -> None:
    address, keys, adapter = world
    key_file = tmp_path / "acme.key"
    code, out, _ = lmdock(capsys, "keys", "gen", "--key", str(key_file), "--json")
    key_id = json.loads(out)["key_id"]
    first = package(tmp_path, adapter, key_file, "acme-first", profile)
    publish = ("publish", first, "--market", address)

    code, _, err = lmdock(capsys, *publish)
    assert code == 4 and "requires credentials" in err and "--role publisher" in err
    code, _, err = lmdock(capsys, *publish, key=keys["carol"])
    assert code == 4 and "consumer 'carol'" in err
    code, _, err = lmdock(capsys, *publish, key=keys["globex"])
    assert code == 4 and "manifest names publisher 'acme'" in err and "knows you as 'globex'" in err
    code, _, err = lmdock(capsys, *publish, key=keys["acme"])
    assert code == 1 and "not registered" in err and f"lmdock keys register --market {address}" in err

    register = ("keys", "register", "--market", address, "--key", str(key_file), "--json")
    code, out, err = lmdock(capsys, *register, key=keys["acme"])
    assert code == 0, err
    assert json.loads(out) | {"created_at": ""} == {
        "key_id": key_id,
        "publisher": "acme",
        "public_key": json.loads(out)["public_key"],
        "created_at": "",
        "revoked_at": "",
        "registered": True,
    }
    code, out, _ = lmdock(capsys, *register, key=keys["acme"])
    assert code == 0 and json.loads(out)["registered"] is False  # running it again is safe
    code, _, err = lmdock(capsys, *register, key=keys["carol"])
    assert code == 4 and "needs the publisher role" in err

    code, out, err = lmdock(capsys, *publish, "--json", key=keys["acme"])
    assert code == 0 and json.loads(out)["uploaded"] is True, err
    code, out, _ = lmdock(capsys, "list", "--market", address, "--json", key=keys["carol"])
    assert [lw["id"] for lw in json.loads(out)] == ["acme-first"]

    code, _, err = lmdock(capsys, "unpublish", "acme-first", "--market", address, key=keys["globex"])
    assert code == 4 and "belongs to publisher 'acme'" in err
    code, out, _ = lmdock(capsys, "unpublish", "acme-first", "--market", address, "--json", key=keys["acme"])
    assert code == 0 and json.loads(out) == {"id": "acme-first", "unpublished": True}
    code, out, _ = lmdock(capsys, "list", "--market", address, "--json", key=keys["carol"])
    assert json.loads(out) == []
    code, _, err = lmdock(capsys, "unpublish", "acme-first", "--market", address, key=keys["acme"])
    assert code == 6 and "acme-first" in err

    # an admin may publish for acme (with acme's registered key), and unpublish anything
    code, out, err = lmdock(capsys, *publish, "--json", key=keys["root"])
    assert code == 0 and json.loads(out)["uploaded"] is True, err
    code, _, _ = lmdock(capsys, "unpublish", "acme-first", "--market", address, key=keys["root"])
    assert code == 0

    code, out, _ = lmdock(capsys, "keys", "list", "--market", address, "--publisher", "acme")
    assert code == 0 and key_id in out
    revoke = ("keys", "revoke", key_id, "--market", address)
    code, _, err = lmdock(capsys, *revoke, "--publisher", "acme", key=keys["globex"])
    assert code == 4 and "'globex' may not revoke signing keys of 'acme'" in err
    code, out, _ = lmdock(capsys, *revoke, "--json", key=keys["acme"])
    assert code == 0 and json.loads(out)["revoked_at"]
    second = package(tmp_path, adapter, key_file, "acme-second", profile)
    code, _, err = lmdock(capsys, "publish", second, "--market", address, key=keys["acme"])
    assert code == 4 and f"signed by key {key_id}, revoked" in err
    code, _, err = lmdock(capsys, *register, key=keys["acme"])
    assert code == 1 and "revoked" in err  # a revoked key can never come back
