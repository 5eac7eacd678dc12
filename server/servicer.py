"""The MarketService servicer (grpc.aio): request -> `Market`, on a worker -> response.

The interceptors have already authenticated the caller, checked the RPC's role and decoded the
request; handlers pass the caller on (`caller_of`) where ownership matters, run every blocking
`Market` call through `Workers.run`, and raise lmdock's typed errors, which
`lmdock.common.grpc_errors.AioErrorStatusInterceptor` answers with their statuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from lmdock.common import serde
from lmdock.common.errors import InvalidArgument
from lmdock.server.blobs import BlobWriter
from lmdock.server.interceptor import caller_of
from lmdock.server.market import Market
from lmdock.server.workers import Workers
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

__all__ = ["MarketServicer"]


class MarketServicer(pb_grpc.MarketServiceServicer):
    def __init__(self, market: Market, workers: Workers) -> None:
        self.market = market
        self.run = workers.run

    async def GetSpecProfile(
        self, request: pb.GetSpecProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSpecProfileResponse:
        return pb.GetSpecProfileResponse(
            profile=serde.profile_to_pb(self.market.profile),
            profiles=[serde.profile_to_pb(p) for p in self.market.profiles],
            task_vector_profiles=[
                serde.task_vector_profile_to_pb(p) for p in self.market.task_vector_profiles
            ],
        )

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        if not request.HasField("spec"):
            raise InvalidArgument("SearchRequest.spec is required")
        result = await self.run(
            self.market.search, serde.spec_from_pb(request.spec), top_k=request.top_k, mixture=request.mixture
        )
        return serde.search_result_to_pb(result)

    async def GetLearnware(
        self, request: pb.GetLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLearnwareResponse:
        _require_id(request.learnware_id)
        learnware = await self.run(self.market.get, request.learnware_id)
        return pb.GetLearnwareResponse(learnware=serde.learnware_to_pb(learnware))

    async def ListLearnwares(
        self, request: pb.ListLearnwaresRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLearnwaresResponse:
        page = await self.run(
            self.market.list,
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

    async def Download(
        self, request: pb.DownloadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadResponse]:
        _require_id(request.learnware_id)
        header, package = await self.run(self.market.download, request.learnware_id, offset=request.offset)
        with package:  # closed also when the caller goes away mid-stream (close waits for a read)
            yield pb.DownloadResponse(header=serde.header_to_pb(header))
            while chunk := await self.run(package.read, self.market.limits.chunk_bytes):
                yield pb.DownloadResponse(chunk=chunk)

    async def Upload(
        self, request_iterator: AsyncIterator[pb.UploadRequest], context: grpc.aio.ServicerContext
    ) -> pb.UploadResponse:
        caller = caller_of(context)
        messages = aiter(request_iterator)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("the first UploadRequest must carry the header")
        opening = asyncio.ensure_future(
            self.run(self.market.begin_upload, sha256=first.header.sha256, size=first.header.size)
        )
        try:
            writer = await asyncio.shield(opening)
        except asyncio.CancelledError:  # the caller left while the writer's file was being made
            opening.add_done_callback(_discard_opened)
            raise
        try:
            async for message in messages:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument("only chunks may follow the upload header")
                await self.run(writer.write, message.chunk)
            staged = await self.run(writer.finish)
        finally:
            writer.discard()  # a no-op once finished; else the caller went away or sent too much
        info = await self.run(self.market.publish, caller, staged)
        return pb.UploadResponse(learnware=serde.learnware_to_pb(info))

    async def Unpublish(
        self, request: pb.UnpublishRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnpublishResponse:
        _require_id(request.learnware_id)
        removed = await self.run(self.market.unpublish, caller_of(context), request.learnware_id)
        return pb.UnpublishResponse(learnware_id=removed.card.id)

    async def RegisterSigningKey(
        self, request: pb.RegisterSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterSigningKeyResponse:
        key = await self.run(
            self.market.register_signing_key,
            caller_of(context),
            request.public_key,
            proof=request.proof,
            publisher=request.publisher,
        )
        return pb.RegisterSigningKeyResponse(key=serde.signing_key_to_pb(key))

    async def ListSigningKeys(
        self, request: pb.ListSigningKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSigningKeysResponse:
        keys = await self.run(self.market.signing_key_list, request.publisher)
        return pb.ListSigningKeysResponse(keys=[serde.signing_key_to_pb(k) for k in keys])

    async def RevokeSigningKey(
        self, request: pb.RevokeSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeSigningKeyResponse:
        if not request.key_id:
            raise InvalidArgument("key_id is required")
        key = await self.run(
            self.market.revoke_signing_key, caller_of(context), request.key_id, publisher=request.publisher
        )
        return pb.RevokeSigningKeyResponse(key=serde.signing_key_to_pb(key))

    async def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.aio.ServicerContext) -> pb.WhoAmIResponse:
        caller = caller_of(context)
        return pb.WhoAmIResponse(
            principal=caller.principal, role=caller.role.label, authenticated_by=caller.authenticated_by
        )


def _discard_opened(opening: asyncio.Future[BlobWriter]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().discard()


def _require_id(learnware_id: str) -> None:
    if not learnware_id:
        raise InvalidArgument("learnware_id is required")
    if len(learnware_id) > 64:
        raise InvalidArgument("learnware_id is at most 64 characters")
