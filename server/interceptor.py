"""The server interceptor every MarketService call passes through (grpc.aio).

For each call, before the handler runs: authenticate (`auth.Authenticator`; on a worker only
when an API key's row must be read, not while the key cache holds it), check the RPC's role
(`auth.METHOD_ROLES`; an RPC missing there is refused), take a rate-limit token and, for
streams, a stream slot (`limits.Limiter`). Only then are the request bytes decoded: the handler
is registered without a deserializer, so bytes that are not the RPC's message answer
INVALID_ARGUMENT here, counted and logged like any refusal (grpc would answer INTERNAL, with a
traceback, before any check). Streams run under the idle and total limits of
`limits.StreamLimits`. The handler receives a context that carries the caller's `Identity`
(read it with `caller_of`). After the call: one access-log line and the metrics
(`observability.Observer`). Health and reflection pass through untouched. Errors are raised,
not answered: `lmdock.common.grpc_errors.AioErrorStatusInterceptor`, installed before this one,
turns them into statuses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from lmdock.common.errors import DeadlineExceeded, InvalidArgument, PermissionDenied, Unauthenticated
from lmdock.common.grpc_errors import AioBehavior, drive_aio, rewrap_aio_handler, status_of
from lmdock.server.auth import METHOD_ROLES, Authenticator
from lmdock.server.identity import Identity
from lmdock.server.limits import Limiter
from lmdock.server.observability import Observer
from lmdock.server.workers import Workers
from lmdock.v1 import market_pb2 as pb

__all__ = ["MarketInterceptor", "caller_of"]

SERVICE = pb.DESCRIPTOR.services_by_name["MarketService"].full_name  # what the checks guard
STREAMING = ("Download", "Upload")


class _CallContext:
    """The handler's ServicerContext, plus the caller's identity."""

    def __init__(self, context: grpc.aio.ServicerContext, identity: Identity) -> None:
        self._context = context
        self.identity = identity

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def caller_of(context: Any) -> Identity:
    """The identity the interceptor attached; refuses a call that did not pass through it."""
    identity = getattr(context, "identity", None)
    if not isinstance(identity, Identity):
        raise Unauthenticated("call was not authenticated")
    return identity


class MarketInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, authenticator: Authenticator, limiter: Limiter, observer: Observer, workers: Workers
    ) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.observer = observer
        self.workers = workers

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        service, _, method = details.method.lstrip("/").partition("/")
        if handler is None or service != SERVICE:
            return handler
        decode = _decoder(method, handler.request_deserializer)
        streamed_in = bool(handler.request_streaming)
        return rewrap_aio_handler(
            handler, lambda behavior: self._guarded(method, behavior, decode, streamed_in), raw_requests=True
        )

    def _guarded(
        self, method: str, behavior: AioBehavior, decode: Callable[[bytes], Any], streamed_in: bool
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def call(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            identity: Identity | None = None
            code = grpc.StatusCode.OK
            try:
                identity = await self._admit(method, context)
                call_context = _CallContext(context, identity)
                if method not in STREAMING:
                    return await drive_aio(behavior, decode(raw), call_context)
                with self._stream_slot(_limit_key(identity, context)):
                    request = self._read_with_limits(raw, decode) if streamed_in else decode(raw)
                    return await self._stream_with_limits(behavior, request, call_context)
            except Exception as exc:
                # the status the error interceptor (installed before this one) will answer with
                code = (context.code() if isinstance(exc, grpc.aio.AbortError) else None) or status_of(exc)
                raise
            finally:
                self.observer.record(
                    method=method,
                    code=code.name,
                    seconds=time.perf_counter() - started,
                    principal=identity.principal if identity else "",
                    role=identity.role.label if identity else "",
                    peer=context.peer(),
                )

        return call

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> Identity:
        if method not in METHOD_ROLES:
            raise PermissionDenied(f"{method} has no access rule; refused")
        required = METHOD_ROLES[method]
        metadata, auth_context = context.invocation_metadata() or (), context.auth_context()
        public = required is None
        identity = self.authenticator.identify_cached(metadata, auth_context, public=public)
        if identity is None:  # the key's row must be read from the database: on a worker
            identify = self.authenticator.identify
            identity = await self.workers.run(identify, metadata, auth_context, public=public)
        if required is not None:
            identity.require(required, method)
        self.limiter.admit(_limit_key(identity, context))
        return identity

    @contextmanager
    def _stream_slot(self, key: str) -> Iterator[None]:
        with self.limiter.stream(key):
            self.observer.streams.inc()
            try:
                yield
            finally:
                self.observer.streams.dec()

    async def _stream_with_limits(self, behavior: AioBehavior, request: Any, context: _CallContext) -> Any:
        limits = self.limiter.streams

        async def write(response: Any) -> None:
            try:
                await asyncio.wait_for(context.write(response), limits.idle_seconds)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the caller read nothing for {limits.idle_seconds:g}s; the stream was closed"
                ) from None

        try:
            async with asyncio.timeout(limits.max_seconds):
                return await drive_aio(behavior, request, context, write=write)
        except TimeoutError:
            raise DeadlineExceeded(
                f"a stream may stay open at most {limits.max_seconds:g}s; resume or retry"
            ) from None

    async def _read_with_limits(
        self, requests: AsyncIterator[bytes], decode: Callable[[bytes], Any]
    ) -> AsyncIterator[Any]:
        idle = self.limiter.streams.idle_seconds
        messages = aiter(requests)
        while True:
            try:
                raw = await asyncio.wait_for(anext(messages), idle)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the caller sent nothing for {idle:g}s; the stream was closed"
                ) from None
            yield decode(raw)


def _decoder(method: str, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """Decodes request bytes, refusing bytes that are not the RPC's message with INVALID_ARGUMENT."""

    def decode(raw: bytes) -> Any:
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except Exception:  # protobuf's DecodeError, or a message nested past its recursion limit
            raise InvalidArgument(f"the {method} request is not a valid message") from None

    return decode


def _limit_key(identity: Identity, context: grpc.aio.ServicerContext) -> str:
    """Limits count per key or certificate; anonymous callers per peer address (port dropped)."""
    if identity.anonymous:
        return f"anonymous:{context.peer().rsplit(':', 1)[0]}"
    return identity.limit_key
