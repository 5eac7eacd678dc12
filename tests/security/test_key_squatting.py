"""Signing-key squatting: registering, or revoking, a key one cannot sign with.

RegisterSigningKey used to take any public key: another publisher could register (then revoke)
a key it did not hold, and its owner got ALREADY_EXISTS for good. Now a registration carries
the key's signature over the caller's principal, the publisher and the key (no key, no proof;
a proof is worthless to any other caller), and key ids are per publisher: whoever else holds a
key registers and revokes only their own row. Real market, real gRPC, real API keys.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.client.connection import MarketClient
from lmdock.common.errors import PermissionDenied
from lmdock.common.package import FORMATS
from lmdock.common.signing import (
    MANIFEST_ENCODINGS,
    generate_key,
    key_id,
    prove_possession,
    public_key_to_b64,
    sign_manifest,
    verify_possession,
)
from lmdock.server.identity import Role
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

from tests.helpers import cluster_spec, make_adapter, make_package
from tests.market_helpers import TINY_BERT, Running, running_market, status_of

DENIED = "PERMISSION_DENIED"


@dataclass
class World:
    running: Running
    api_keys: dict[str, str]  # principal -> API key: publishers acme and globex, admin root
    adapter: Path
    tmp: Path
    profile: object
    ids: Iterator[int]

    def client(self, who: str) -> MarketClient:
        return MarketClient(self.running.address, api_key=self.api_keys[who], timeout=20)

    def register_raw(self, who: str, public_key: str, proof: bytes, publisher: str = "") -> str:
        """A RegisterSigningKey request exactly as given (what a hostile caller can send)."""
        request = pb.RegisterSigningKeyRequest(public_key=public_key, proof=proof, publisher=publisher)
        with grpc.insecure_channel(self.running.address) as channel:
            try:
                pb_grpc.MarketServiceStub(channel).RegisterSigningKey(
                    request, metadata=[("authorization", f"Bearer {self.api_keys[who]}")], timeout=20
                )
            except grpc.RpcError as exc:
                return exc.code().name
        return "OK"

    def upload_as_acme(self, key: Ed25519PrivateKey) -> str:
        n = next(self.ids)
        path = self.tmp / f"acme-{n}.tar"
        make_package(
            path,
            self.adapter,
            key=key,
            spec=cluster_spec(self.profile, n),
            learnware_id=f"acme-squat-{n}",
            base_model=TINY_BERT,
            publisher="acme",
        )
        with self.client("acme") as acme:
            return acme.upload(path).signing_key_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, profile) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("squatting")
    with running_market(tmp / "market", profile, base_models={TINY_BERT: tiny_bert}) as running:
        create = running.market.api_keys.create
        api_keys = {
            "acme": create("acme", Role.PUBLISHER)[1],
            "globex": create("globex", Role.PUBLISHER)[1],
            "root": create("root", Role.ADMIN)[1],
        }
        adapter = make_adapter(tiny_bert, tmp / "adapter", base_name=TINY_BERT)
        yield World(running, api_keys, adapter, tmp, profile, itertools.count())


def b64(key: Ed25519PrivateKey) -> str:
    return public_key_to_b64(key.public_key())


def test_a_key_cannot_be_registered_without_its_private_key(world: World) -> None:
    acme_key, globex_key = generate_key(), generate_key()
    public = b64(acme_key)
    assert world.register_raw("globex", public, b"") == "INVALID_ARGUMENT"  # no proof at all
    assert world.register_raw("globex", "not a key!", b"\0" * 64) == "INVALID_ARGUMENT"
    assert world.register_raw("globex", public, b"\0" * 63) == "INVALID_ARGUMENT"  # not a signature
    assert world.register_raw("globex", public, b"\0" * 64) == DENIED
    made_with_another_key = prove_possession(globex_key, principal="globex", publisher="globex")
    assert world.register_raw("globex", public, made_with_another_key) == DENIED
    assert world.running.market.signing_keys.with_id(key_id(public)) == []  # nothing was squatted
    with world.client("acme") as acme:
        assert acme.register_signing_key(acme_key).publisher == "acme"  # the owner is not blocked
    assert world.upload_as_acme(acme_key) == key_id(public)


def test_a_proof_made_for_one_caller_does_not_work_for_another(world: World) -> None:
    acme_key = generate_key()
    public, proof = b64(acme_key), prove_possession(acme_key, principal="acme", publisher="acme")
    assert world.register_raw("globex", public, proof) == DENIED  # replayed as globex's key
    assert world.register_raw("globex", public, proof, publisher="acme") == DENIED
    assert world.register_raw("root", public, proof, publisher="acme") == DENIED  # even by an admin
    assert world.register_raw("root", public, proof) == DENIED
    assert world.running.market.signing_keys.with_id(key_id(public)) == []
    assert world.register_raw("acme", public, proof) == "OK"  # the caller it was made for
    admin_proof = prove_possession(acme_key, principal="root", publisher="acme")
    assert world.register_raw("root", public, admin_proof, publisher="globex") == DENIED  # other publisher


def test_a_publisher_holding_the_same_key_neither_blocks_nor_revokes_its_owner(world: World) -> None:
    shared = generate_key()  # acme's key, which globex holds too (leaked, or shared on purpose)
    kid = key_id(b64(shared))
    with world.client("globex") as globex, world.client("acme") as acme:
        assert globex.register_signing_key(shared).publisher == "globex"  # first, with a real proof
        assert acme.register_signing_key(shared).publisher == "acme"  # used to be ALREADY_EXISTS
        assert globex.revoke_signing_key(kid).publisher == "globex"  # its own row, not acme's
        assert status_of(lambda: globex.revoke_signing_key(kid, publisher="acme")) == DENIED
        assert [(k.publisher, k.revoked) for k in acme.signing_keys() if k.key_id == kid] == [
            ("acme", False),
            ("globex", True),
        ]
    assert world.upload_as_acme(shared) == kid  # acme still publishes with it


def test_another_publisher_cannot_revoke_a_key(world: World) -> None:
    acme_key = generate_key()
    kid = key_id(b64(acme_key))
    with world.client("acme") as acme, world.client("globex") as globex:
        acme.register_signing_key(acme_key)
        assert status_of(lambda: globex.revoke_signing_key(kid)) == DENIED
        assert status_of(lambda: globex.revoke_signing_key(kid, publisher="acme")) == DENIED
        assert status_of(lambda: globex.revoke_signing_key("0" * 16)) == "NOT_FOUND"
        assert [k.revoked for k in acme.signing_keys("acme") if k.key_id == kid] == [False]
        assert world.upload_as_acme(acme_key) == kid
        assert acme.revoke_signing_key(kid).revoked  # the owner may


def test_an_admin_names_the_publisher_when_several_hold_a_key(world: World) -> None:
    shared = generate_key()
    kid = key_id(b64(shared))
    with world.client("acme") as acme, world.client("globex") as globex, world.client("root") as root:
        acme.register_signing_key(shared)
        globex.register_signing_key(shared)
        assert status_of(lambda: root.revoke_signing_key(kid)) == "INVALID_ARGUMENT"  # whose?
        assert root.revoke_signing_key(kid, publisher="globex").publisher == "globex"
        assert [k.revoked for k in acme.signing_keys("acme") if k.key_id == kid] == [False]


def test_a_manifest_signature_is_no_proof() -> None:
    """The proof's context prefix sets it apart: a package signature over the very same fields
    (which a publisher's key signs as a matter of course) never passes for one."""
    key = generate_key()
    fields = {"principal": "globex", "publisher": "globex", "public_key": b64(key)}
    signatures = [key.sign(encode(fields)) for encode in MANIFEST_ENCODINGS.values()]  # the bare fields
    signatures += [base64.b64decode(sign_manifest({**fields, "format": f}, key).signature) for f in FORMATS]
    for manifest_signature in signatures:
        with pytest.raises(PermissionDenied, match="does not verify"):
            verify_possession(b64(key), manifest_signature, principal="globex", publisher="globex")
    proof = prove_possession(key, principal="globex", publisher="globex")
    verify_possession(b64(key), proof, principal="globex", publisher="globex")  # the real one does
