"""A hostile value echoed into an error message cannot change the status a caller gets.

Found by fuzzing (issue 14): ListLearnwares with a task_kind of a megabyte, RevokeSigningKey
with such a key_id and RegisterSigningKey with such a publisher were refused with a message
that quoted the value whole. grpc sends the message in a trailer, which the client refused as
too large: the caller saw RESOURCE_EXHAUSTED ("received metadata size exceeds hard limit")
instead of INVALID_ARGUMENT, NOT_FOUND or PERMISSION_DENIED. Messages are now cut to
`MAX_MESSAGE_BYTES` where every typed error becomes a status.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from lmdock.common.grpc_errors import MAX_MESSAGE_BYTES
from lmdock.server.identity import Role
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

from tests.market_helpers import running_market

HUGE = "𝕏" * 300_000  # 1.2 MB of UTF-8, percent-encoded to 3.6 MB in a trailer


@pytest.mark.parametrize(
    ("rpc", "request_", "status", "start"),
    [
        ("ListLearnwares", pb.ListLearnwaresRequest(task_kind=HUGE), "INVALID_ARGUMENT", "task_kind must be"),
        ("RevokeSigningKey", pb.RevokeSigningKeyRequest(key_id=HUGE), "NOT_FOUND", "no signing key with id"),
        (
            "RegisterSigningKey",
            pb.RegisterSigningKeyRequest(public_key="AAAA", publisher=HUGE),
            "PERMISSION_DENIED",
            "'someone' may not register signing keys for",
        ),
    ],
)
def test_a_huge_echoed_value_keeps_the_status_and_a_readable_message(
    tmp_path: Path, profile, rpc: str, request_, status: str, start: str
) -> None:
    with running_market(tmp_path / "m", profile) as market:
        key = market.market.api_keys.create("someone", Role.PUBLISHER)[1]
        with grpc.insecure_channel(market.address) as channel:
            call = getattr(pb_grpc.MarketServiceStub(channel), rpc)
            with pytest.raises(grpc.RpcError) as caught:
                call(request_, timeout=10, metadata=(("authorization", f"Bearer {key}"),))
    assert caught.value.code().name == status
    details = caught.value.details()
    assert details.startswith(start)
    assert len(details.encode()) < MAX_MESSAGE_BYTES + 64 and details.endswith("more bytes)")
