"""The MarketService servicer: decode request -> call `Market` -> encode response.

The interceptors have already authenticated the caller and checked the RPC's role; handlers
pass the caller on (`caller_of`) where ownership matters, and raise lmdock's typed errors,
which `lmdock.common.grpc_errors.ErrorStatusInterceptor` answers with their statuses.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from lmdock.common import serde
from lmdock.common.errors import InvalidArgument
from lmdock.server.interceptor import caller_of
from lmdock.server.market import Market
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

__all__ = ["MarketServicer"]


class MarketServicer(pb_grpc.MarketServiceServicer):
    def __init__(self, market: Market) -> None:
        self.market = market

    def GetSpecProfile(
        self, request: pb.GetSpecProfileRequest, context: grpc.ServicerContext
    ) -> pb.GetSpecProfileResponse:
        return pb.GetSpecProfileResponse(profile=serde.profile_to_pb(self.market.profile))

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        if not request.HasField("spec"):
            raise InvalidArgument("SearchRequest.spec is required")
        result = self.market.search(
            serde.spec_from_pb(request.spec), top_k=request.top_k, mixture=request.mixture
        )
        return serde.search_result_to_pb(result)

    def GetLearnware(
        self, request: pb.GetLearnwareRequest, context: grpc.ServicerContext
    ) -> pb.GetLearnwareResponse:
        _require_id(request.learnware_id)
        return pb.GetLearnwareResponse(learnware=serde.learnware_to_pb(self.market.get(request.learnware_id)))

    def ListLearnwares(
        self, request: pb.ListLearnwaresRequest, context: grpc.ServicerContext
    ) -> pb.ListLearnwaresResponse:
        page = self.market.list(
            page_size=request.page_size,
            page_token=request.page_token,
            domain=request.domain,
            tag=request.tag,
            publisher=request.publisher,
            base_model=request.base_model,
            task_kind=request.task_kind,
        )
        return pb.ListLearnwaresResponse(
            learnwares=[serde.learnware_to_pb(lw) for lw in page.items], next_page_token=page.next_token
        )

    def Download(
        self, request: pb.DownloadRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadResponse]:
        _require_id(request.learnware_id)
        header, chunks = self.market.download(request.learnware_id, offset=request.offset)
        yield pb.DownloadResponse(header=serde.header_to_pb(header))
        for chunk in chunks:
            yield pb.DownloadResponse(chunk=chunk)

    def Upload(
        self, request_iterator: Iterator[pb.UploadRequest], context: grpc.ServicerContext
    ) -> pb.UploadResponse:
        caller = caller_of(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("the first UploadRequest must carry the header")
        header = first.header

        def chunks() -> Iterator[bytes]:
            for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument("only chunks may follow the upload header")
                yield message.chunk

        info = self.market.upload(caller, sha256=header.sha256, size=header.size, chunks=chunks())
        return pb.UploadResponse(learnware=serde.learnware_to_pb(info))

    def Unpublish(self, request: pb.UnpublishRequest, context: grpc.ServicerContext) -> pb.UnpublishResponse:
        _require_id(request.learnware_id)
        removed = self.market.unpublish(caller_of(context), request.learnware_id)
        return pb.UnpublishResponse(learnware_id=removed.card.id)

    def RegisterSigningKey(
        self, request: pb.RegisterSigningKeyRequest, context: grpc.ServicerContext
    ) -> pb.RegisterSigningKeyResponse:
        key = self.market.register_signing_key(
            caller_of(context), request.public_key, proof=request.proof, publisher=request.publisher
        )
        return pb.RegisterSigningKeyResponse(key=serde.signing_key_to_pb(key))

    def ListSigningKeys(
        self, request: pb.ListSigningKeysRequest, context: grpc.ServicerContext
    ) -> pb.ListSigningKeysResponse:
        keys = self.market.signing_key_list(request.publisher)
        return pb.ListSigningKeysResponse(keys=[serde.signing_key_to_pb(k) for k in keys])

    def RevokeSigningKey(
        self, request: pb.RevokeSigningKeyRequest, context: grpc.ServicerContext
    ) -> pb.RevokeSigningKeyResponse:
        if not request.key_id:
            raise InvalidArgument("key_id is required")
        key = self.market.revoke_signing_key(caller_of(context), request.key_id, publisher=request.publisher)
        return pb.RevokeSigningKeyResponse(key=serde.signing_key_to_pb(key))

    def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.ServicerContext) -> pb.WhoAmIResponse:
        caller = caller_of(context)
        return pb.WhoAmIResponse(
            principal=caller.principal, role=caller.role.label, authenticated_by=caller.authenticated_by
        )


def _require_id(learnware_id: str) -> None:
    if not learnware_id:
        raise InvalidArgument("learnware_id is required")
    if len(learnware_id) > 64:
        raise InvalidArgument("learnware_id is at most 64 characters")
