"""Every RPC x every role, on a real authenticated market (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
from pathlib import Path

import grpc
import pytest
from lmdock.client.connection import MarketClient
from lmdock.common.signing import generate_key, public_key_to_b64
from lmdock.server.identity import Role
from lmdock.v1 import market_pb2 as pb

from tests.helpers import cluster_spec, make_adapter, make_package
from tests.market_helpers import TINY_BERT, running_market, status_of

ROLES = ("anonymous", "consumer", "publisher", "other-publisher", "admin")
UNAUTH, DENIED = "UNAUTHENTICATED", "PERMISSION_DENIED"
CONSUMER_RPC = dict(zip(ROLES, (UNAUTH, "OK", "OK", "OK", "OK"), strict=True))
OWNER_RPC = dict(zip(ROLES, (UNAUTH, DENIED, "OK", DENIED, "OK"), strict=True))
EXPECTED = {
    "GetSpecProfile": CONSUMER_RPC,
    "Search": CONSUMER_RPC,
    "GetLearnware": CONSUMER_RPC,
    "ListLearnwares": CONSUMER_RPC,
    "Download": CONSUMER_RPC,
    "WhoAmI": CONSUMER_RPC,
    "ListSigningKeys": dict.fromkeys(ROLES, "OK"),
    "Upload": OWNER_RPC,
    "Unpublish": OWNER_RPC,
    "RevokeSigningKey": OWNER_RPC,
    "RegisterSigningKey": dict(zip(ROLES, (UNAUTH, DENIED, "OK", "OK", "OK"), strict=True)),
}


class World:
    """A market with one consumer, two publishers (acme, globex) and an admin."""

    def __init__(self, running, tmp: Path, tiny_bert: Path, profile) -> None:
        self.running, self.tmp, self.profile = running, tmp, profile
        market = running.market
        self.keys = {
            "consumer": market.api_keys.create("carol", Role.CONSUMER)[1],
            "publisher": market.api_keys.create("acme", Role.PUBLISHER)[1],
            "other-publisher": market.api_keys.create("globex", Role.PUBLISHER)[1],
            "admin": market.api_keys.create("root", Role.ADMIN)[1],
        }
        self.acme_key = generate_key()
        market.signing_keys.register(
            "acme", public_key_to_b64(self.acme_key.public_key()), registered_by="test"
        )
        self.adapter = make_adapter(tiny_bert, tmp / "adapter", base_name=TINY_BERT)
        self._ids = itertools.count()
        self.published = self.publish_as_acme()

    def client(self, role: str) -> MarketClient:
        return MarketClient(self.running.address, api_key=self.keys.get(role), timeout=20)

    def package(self) -> Path:
        n = next(self._ids)
        path = self.tmp / f"pkg{n}.tar"
        make_package(
            path,
            self.adapter,
            key=self.acme_key,
            spec=cluster_spec(self.profile, n),
            learnware_id=f"acme-lw-{n}",
            base_model=TINY_BERT,
            publisher="acme",
        )
        return path

    def publish_as_acme(self) -> str:
        with self.client("publisher") as acme:
            return acme.upload(self.package()).card.id

    def acme_signing_key(self) -> str:
        public = public_key_to_b64(generate_key().public_key())
        return self.running.market.signing_keys.register("acme", public, registered_by="test").key_id

    def call(self, client: MarketClient, rpc: str):
        spec = cluster_spec(self.profile, 0)
        calls = {
            "GetSpecProfile": client.profile,
            "Search": lambda: client.search(spec),
            "GetLearnware": lambda: client.get(self.published),
            "ListLearnwares": client.list,
            "Download": lambda: client.download(self.published, self.tmp / f"dl{next(self._ids)}.tar"),
            "WhoAmI": client.whoami,
            "ListSigningKeys": client.signing_keys,
            "Upload": lambda: client.upload(self.package()),
            "Unpublish": lambda: client.unpublish(self.publish_as_acme()),
            "RevokeSigningKey": lambda: client.revoke_signing_key(self.acme_signing_key()),
            "RegisterSigningKey": lambda: client.register_signing_key(generate_key()),
        }
        return calls[rpc]()


@pytest.fixture()
def world(tmp_path: Path, tiny_bert: Path, profile, db_url: str):
    with running_market(
        tmp_path / "market", profile, db_url=db_url, base_models={TINY_BERT: tiny_bert}
    ) as running:
        yield World(running, tmp_path, tiny_bert, profile)


def test_every_rpc_has_an_expectation() -> None:
    service = pb.DESCRIPTOR.services_by_name["MarketService"]
    assert set(EXPECTED) == {m.name for m in service.methods}


def test_every_rpc_for_every_role(world: World) -> None:
    got = {}
    for role in ROLES:
        with world.client(role) as client:
            for rpc in EXPECTED:
                got[(rpc, role)] = status_of(lambda c=client, r=rpc: world.call(c, r))
    expected = {(rpc, role): EXPECTED[rpc][role] for rpc in EXPECTED for role in ROLES}
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


def test_identities_and_ownership(world: World) -> None:
    with world.client("admin") as admin:
        assert admin.whoami().role == "admin"
        assert admin.register_signing_key(generate_key(), publisher="globex").publisher == "globex"
    with world.client("other-publisher") as globex:
        assert (globex.whoami().principal, globex.whoami().authenticated_by) == ("globex", "api-key")
        assert status_of(lambda: globex.register_signing_key(generate_key(), publisher="acme")) == DENIED
        # globex may not publish a package that names acme, nor one signed by acme's key
        assert status_of(lambda: globex.upload(world.package())) == DENIED
    with MarketClient(world.running.address) as anonymous:
        assert len(anonymous.signing_keys("acme")) >= 1  # public: revocations for everyone


def test_bad_revoked_and_malformed_credentials_are_unauthenticated(world: World) -> None:
    market = world.running.market
    info, key = market.api_keys.create("dave", Role.CONSUMER)
    with MarketClient(world.running.address, api_key=key) as client:
        assert client.whoami().principal == "dave"
        market.api_keys.revoke(info.key_id)
        assert status_of(client.whoami) == UNAUTH
        assert status_of(client.signing_keys) == UNAUTH  # a presented key must be valid, even here
    with MarketClient(world.running.address, api_key="lmk_123") as client:
        assert status_of(client.profile) == UNAUTH
    with grpc.insecure_channel(world.running.address) as channel:
        call = channel.unary_unary(
            "/lmdock.v1.MarketService/WhoAmI",
            request_serializer=pb.WhoAmIRequest.SerializeToString,
            response_deserializer=pb.WhoAmIResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info_:
            call(pb.WhoAmIRequest(), metadata=[("authorization", "Basic abc")], timeout=10)
        assert info_.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_revoked_signing_key_blocks_uploads(world: World) -> None:
    signer = world.running.market.signing_keys.list("acme")[0]
    with world.client("publisher") as acme:
        acme.revoke_signing_key(signer.key_id)
        assert status_of(lambda: acme.upload(world.package())) == DENIED
        assert [k.revoked for k in acme.signing_keys("acme")] == [True]
