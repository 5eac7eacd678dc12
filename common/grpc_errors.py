"""lmdock's typed errors on gRPC: one interceptor per side applies `lmdock.common.errors`' mapping.

Server side, `ErrorStatusInterceptor` (grpc's thread-pool server: the daemon) and
`AioErrorStatusInterceptor` (grpc.aio: the market) wrap every handler, unary or streaming: an LmdockError
becomes its own status (`LmdockError.status`) with its message (cut to `MAX_MESSAGE_BYTES`); a
request stream that broke (the client went away) becomes CANCELLED; anything else is a bug and
becomes INTERNAL, logged with its type and traceback, never with the message or the request. Client side,
`TypedErrorsInterceptor` turns a failed call's RpcError back into the typed error for its
status (`error_for_status`).

The glue lives in common because both servers (market, daemon) and both clients need it and
common is the one package server and client may both import; only the wire edges import this
module, so the rest of common stays free of grpc.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn

import grpc
from lmdock.common.errors import LmdockError, error_for_status

__all__ = [
    "AioErrorStatusInterceptor",
    "ErrorStatusInterceptor",
    "TypedErrorsInterceptor",
    "drive_aio",
    "rewrap_aio_handler",
    "rewrap_handler",
    "status_of",
]

log = logging.getLogger(__name__)
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")  # a handler has one


def rewrap_handler(
    handler: grpc.RpcMethodHandler,
    *,
    unary: Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]],
    stream: Callable[[Callable[[Any, Any], Iterator[Any]]], Callable[[Any, Any], Iterator[Any]]],
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped: by `stream` when it streams responses, else by
    `unary`; its kind and (de)serializers are kept. What a server interceptor returns."""
    wrap = stream if handler.response_streaming else unary
    return _rebuilt(handler, wrap, request_deserializer=handler.request_deserializer)


def _rebuilt(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Any], Any], *, request_deserializer: Any
) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s kind, behaviour `wrap(its behaviour)`, its response serializer."""
    kind = next(k for k in _KINDS if getattr(handler, k) is not None)
    rebuild: Callable[..., grpc.RpcMethodHandler] = getattr(grpc, f"{kind}_rpc_method_handler")
    return rebuild(
        wrap(getattr(handler, kind)),
        request_deserializer=request_deserializer,
        response_serializer=handler.response_serializer,
    )


def status_of(exc: Exception) -> grpc.StatusCode:
    """The status a handler's exception answers with."""
    if isinstance(exc, LmdockError):
        code: grpc.StatusCode = getattr(grpc.StatusCode, exc.status, grpc.StatusCode.UNKNOWN)
        return code
    if isinstance(exc, grpc.RpcError):  # reading the request stream failed: the client went away
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


#: The longest message a status carries, in UTF-8 bytes. grpc sends it percent-encoded in a
#: trailer (up to 3 bytes per byte), and a client refuses trailers past 8 KiB: a message that
#: echoes a caller's megabyte-long value would reach it as RESOURCE_EXHAUSTED, not its status.
MAX_MESSAGE_BYTES = 1024


def _bounded(message: str) -> str:
    """`message`, cut to MAX_MESSAGE_BYTES (at a character boundary) with a note of the rest."""
    data = message.encode("utf-8")
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    kept = data[:MAX_MESSAGE_BYTES].decode("utf-8", errors="ignore")
    return f"{kept}... ({len(data) - len(kept.encode('utf-8'))} more bytes)"


def _answer(exc: Exception, internal: str) -> tuple[grpc.StatusCode, str]:
    """The status and message a failed handler answers with; logs what the operator must see."""
    code = status_of(exc)
    if isinstance(exc, LmdockError):
        return code, _bounded(str(exc))
    if code == grpc.StatusCode.CANCELLED:
        log.info("client stream ended early (cancelled or past its deadline)")
        return code, "the request stream was cancelled"
    log.error("internal error in handler: %s", type(exc).__name__, exc_info=exc)
    return code, internal


class ErrorStatusInterceptor(grpc.ServerInterceptor):
    """Answers every failed handler with the status of its exception (see `status_of`).

    `server` names the program whose log holds an internal error's details ("market").
    Install it first, so that it also answers for the errors of the interceptors after it.
    """

    def __init__(self, server: str) -> None:
        self._internal = f"internal error; the {server}'s log has the details"

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        return None if handler is None else rewrap_handler(handler, unary=self._unary, stream=self._stream)

    def _unary(self, behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return behavior(request, context)
            except Exception as exc:
                self._abort(context, exc)

        return call

    def _stream(self, behavior: Callable[[Any, Any], Iterator[Any]]) -> Callable[[Any, Any], Iterator[Any]]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from behavior(request, context)
            except Exception as exc:
                self._abort(context, exc)

        return call

    def _abort(self, context: grpc.ServicerContext, exc: Exception) -> NoReturn:
        if context.code() is not None:  # the handler aborted with a status of its own: keep it
            raise exc
        context.abort(*_answer(exc, self._internal))
        raise AssertionError("context.abort always raises")  # for type checkers: abort is untyped


AioBehavior = Callable[[Any, Any], Any]  # a coroutine function, or an async generator function


def rewrap_aio_handler(
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[AioBehavior], Callable[[Any, Any], Awaitable[Any]]],
    *,
    raw_requests: bool = False,
) -> grpc.RpcMethodHandler:
    """An aio `handler` whose behaviour is `wrap(behaviour)`: a coroutine function that answers a
    unary call by returning and a streaming one by writing (`drive_aio`). Its kind and
    serializers are kept, except that with `raw_requests` the wrapper gets the request bytes."""
    deserializer = None if raw_requests else handler.request_deserializer
    return _rebuilt(handler, wrap, request_deserializer=deserializer)


async def drive_aio(
    behavior: AioBehavior,
    request: Any,
    context: Any,
    write: Callable[[Any], Awaitable[None]] | None = None,
) -> Any:
    """Run an aio behaviour to its end: a unary one's response is returned; a streaming one's
    responses are written (by `write`, default `context.write`) and None is returned."""
    outcome = behavior(request, context)
    if not inspect.isasyncgen(outcome):
        return await outcome
    write = write or context.write
    async for response in outcome:
        await write(response)
    return None


class AioErrorStatusInterceptor(grpc.aio.ServerInterceptor):
    """`ErrorStatusInterceptor` for a grpc.aio server: same statuses, same log lines."""

    def __init__(self, server: str) -> None:
        self._internal = f"internal error; the {server}'s log has the details"

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        return None if handler is None else rewrap_aio_handler(handler, self._wrap)

    def _wrap(self, behavior: AioBehavior) -> Callable[[Any, Any], Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await drive_aio(behavior, request, context)
            except grpc.aio.AbortError:  # the handler aborted with a status of its own: keep it
                raise
            except Exception as exc:
                await context.abort(*_answer(exc, self._internal))

        return call


class TypedErrorsInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Raises lmdock's typed error when a call fails: `to_error(status name, details)`.

    Install it first on a channel (`grpc.intercept_channel`), so that the interceptors after it
    see plain gRPC. Streamed responses raise the typed error while they are read.
    """

    def __init__(self, to_error: Callable[[str, str], LmdockError] = error_for_status) -> None:
        self._to_error = to_error

    def _typed(self, exc: grpc.RpcError) -> LmdockError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return self._to_error(code.name, str(details))

    def _response(self, outcome: Any) -> Any:
        failure = outcome.exception()
        if isinstance(failure, grpc.RpcError):
            raise self._typed(failure) from None
        return outcome

    def _responses(self, call: Any) -> Any:
        return _TypedStream(call, self._typed)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._response(continuation(details, request))

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return self._response(continuation(details, request_iterator))

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._responses(continuation(details, request))

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return self._responses(continuation(details, request_iterator))


class _TypedStream:
    """A streaming call whose iteration raises typed errors; everything else is the call's."""

    def __init__(self, call: Any, typed: Callable[[grpc.RpcError], LmdockError]) -> None:
        self._call = call
        self._typed = typed

    def __iter__(self) -> _TypedStream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            raise self._typed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)
