"""Text with a NUL character is refused with INVALID_ARGUMENT on every database.

Found by fuzzing (issue 14) on PostgreSQL: its text cannot hold NUL, so any request string
that reached a query -- a learnware id, a List filter, a publisher, a key id, an upload's
sha256, a manifest's description -- raised psycopg's DataError, answered INTERNAL with a
traceback in the log. The database now refuses such a value before it is sent, on SQLite too,
and a manifest's card before the market stores anything of the package.
"""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import grpc
import pytest
from lmdock.client.connection import MarketClient
from lmdock.common.errors import InvalidArgument
from lmdock.common.signing import generate_key, sign_manifest
from lmdock.server.auth import AccessPolicy
from lmdock.server.identity import Role
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

from tests.helpers import cluster_spec, make_adapter, make_package, rewrite_tar
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


@pytest.mark.parametrize(("field", "value"), [("domain", NUL), ("description", NUL), ("tags", [NUL])])
def test_a_package_with_nul_in_its_card_is_refused_and_leaves_nothing(
    db_url: str, tmp_path: Path, tiny_bert: Path, profile, field: str, value: object
) -> None:
    """On an open (demo) market the refusal came after the publisher's first key was
    registered, and the key stayed. The card now refuses NUL before anything is stored."""
    key = generate_key()
    valid = tmp_path / "valid.tar"
    make_package(
        valid,
        make_adapter(tiny_bert, tmp_path / "adapter", base_name=TINY_BERT),
        key=key,
        spec=cluster_spec(profile, 1),
        base_model=TINY_BERT,
    )
    with tarfile.open(valid) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    manifest[field] = value
    signature = sign_manifest(manifest, key).to_dict()
    hostile = rewrite_tar(
        valid,
        tmp_path / "hostile.tar",
        change={
            "manifest.json": json.dumps(manifest).encode(),
            "signature.json": json.dumps(signature).encode(),
        },
    )
    with running_market(
        tmp_path / "m",
        profile,
        db_url=db_url,
        base_models={TINY_BERT: tiny_bert},
        access=AccessPolicy.open_demo(),
    ) as market:
        with MarketClient(market.address) as client, pytest.raises(InvalidArgument, match="NUL character"):
            client.upload(hostile)
        assert market.market.signing_keys.list() == []
        assert market.market.catalogue.package_digests() == set()
        assert [p for p in market.market.blobs.root.rglob("*") if p.is_file()] == []
