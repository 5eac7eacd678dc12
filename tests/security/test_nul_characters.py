"""Text with a NUL character is refused with INVALID_ARGUMENT on every database.

Found by fuzzing (issue 14) on PostgreSQL: its text cannot hold NUL, so any request string
that reached a query -- a learnware id, a List filter, a publisher, a key id, an upload's
sha256, a manifest's description -- raised psycopg's DataError, answered INTERNAL with a
traceback in the log. The database now refuses such a value before it is sent, on SQLite too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from lmdock.client.connection import MarketClient
from lmdock.common.errors import InvalidArgument
from lmdock.common.signing import generate_key, public_key_to_b64
from lmdock.server.auth import AccessPolicy
from lmdock.server.identity import Role
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

from tests.helpers import cluster_spec, make_adapter, make_package
from tests.market_helpers import TINY_BERT, running_market

NUL = "a\0b"
REQUESTS = [
    ("GetLearnware", pb.GetLearnwareRequest(learnware_id=NUL)),
    ("ListLearnwares", pb.ListLearnwaresRequest(domain=NUL, tag=NUL)),
    ("ListSigningKeys", pb.ListSigningKeysRequest(publisher=NUL)),
    ("RevokeSigningKey", pb.RevokeSigningKeyRequest(key_id=NUL)),
    ("Unpublish", pb.UnpublishRequest(learnware_id=NUL)),
]


def test_request_strings_with_nul_are_invalid_arguments(
    db_url: str, tmp_path: Path, profile, caplog: pytest.LogCaptureFixture
) -> None:
    with running_market(tmp_path / "m", profile, db_url=db_url) as market:
        key = market.market.api_keys.create("root", Role.ADMIN)[1]
        metadata = (("authorization", f"Bearer {key}"),)
        with grpc.insecure_channel(market.address) as channel:
            stub = pb_grpc.MarketServiceStub(channel)
            for rpc, request in REQUESTS:
                with pytest.raises(grpc.RpcError) as caught:
                    getattr(stub, rpc)(request, timeout=10, metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc
                assert caught.value.details() == "text may not contain NUL characters"
            header = pb.UploadRequest(header=pb.UploadHeader(sha256=NUL, size=3))
            with pytest.raises(grpc.RpcError) as caught:
                stub.Upload(iter([header]), timeout=10, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_package_with_nul_in_its_card_is_refused_and_leaves_nothing(
    db_url: str, tmp_path: Path, tiny_bert: Path, profile
) -> None:
    key = generate_key()
    out = tmp_path / "pkg.tar"
    make_package(
        out,
        make_adapter(tiny_bert, tmp_path / "adapter", base_name=TINY_BERT),
        key=key,
        spec=cluster_spec(profile, 1),
        base_model=TINY_BERT,
        domain="fine\0print",
    )
    with running_market(
        tmp_path / "m",
        profile,
        db_url=db_url,
        base_models={TINY_BERT: tiny_bert},
        access=AccessPolicy.open_demo(),
    ) as market:
        market.market.signing_keys.register("tester", public_key_to_b64(key.public_key()), registered_by="t")
        with MarketClient(market.address) as client, pytest.raises(InvalidArgument, match="NUL"):
            client.upload(out)
        assert market.market.catalogue.package_digests() == set()
        assert [p for p in market.market.blobs.root.rglob("*") if p.is_file()] == []
