"""Maps lmdock's typed errors to gRPC status codes, once, for every handler."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from lmdock.common.errors import LmdockError

__all__ = ["abort_with", "grpc_errors"]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def abort_with(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    if isinstance(exc, LmdockError):
        context.abort(getattr(grpc.StatusCode, exc.status, grpc.StatusCode.UNKNOWN), str(exc))
    if isinstance(exc, grpc.RpcError):  # reading the request stream failed: the client went away
        log.info("client stream ended early (cancelled or past its deadline)")
        context.abort(grpc.StatusCode.CANCELLED, "the request stream was cancelled")
    # Anything else is our bug: log the type and traceback (never request payloads).
    log.exception("internal error in handler: %s", type(exc).__name__)
    context.abort(grpc.StatusCode.INTERNAL, "internal error; the market's log has the details")
    raise AssertionError("context.abort always raises")  # for type checkers: abort is untyped


def grpc_errors(handler: F) -> F:
    """Turn LmdockError raised by a unary or streaming handler into the matching status."""
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                yield from handler(self, request, context)
            except Exception as exc:
                abort_with(context, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(handler)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handler(self, request, context)
        except Exception as exc:
            abort_with(context, exc)

    return unary  # type: ignore[return-value]
