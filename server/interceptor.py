"""The server interceptor every MarketService call passes through.

For each call, before the handler runs: authenticate (`auth.Authenticator`), check the RPC's
role (`auth.METHOD_ROLES`; an RPC missing there is refused), take a rate-limit token and, for
streams, a stream slot (`limits.Limiter`). The handler then receives a context that carries
the caller's `Identity` (read it with `caller_of`). After the call: one access-log line and
the metrics (`observability.Observer`). Health and reflection pass through untouched. Errors
are raised, not answered: `lmdock.common.grpc_errors.ErrorStatusInterceptor`, installed
before this one, turns them into statuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from lmdock.common.errors import PermissionDenied, Unauthenticated
from lmdock.common.grpc_errors import rewrap_handler, status_of
from lmdock.server.auth import METHOD_ROLES, Authenticator
from lmdock.server.identity import Identity
from lmdock.server.limits import Limiter
from lmdock.server.observability import Observer
from lmdock.v1 import market_pb2 as pb

__all__ = ["MarketInterceptor", "caller_of"]

SERVICE = pb.DESCRIPTOR.services_by_name["MarketService"].full_name  # what the checks guard
STREAMING = ("Download", "Upload")


class _CallContext:
    """The handler's ServicerContext, plus the caller's identity."""

    def __init__(self, context: grpc.ServicerContext, identity: Identity) -> None:
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


class MarketInterceptor(grpc.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, limiter: Limiter, observer: Observer) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.observer = observer

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        service, _, method = details.method.lstrip("/").partition("/")
        if handler is None or service != SERVICE:
            return handler
        guard = self._guard_factory(method)
        return rewrap_handler(
            handler,
            unary=lambda behavior: _guarded(behavior, guard),
            stream=lambda behavior: _guarded_stream(behavior, guard),
        )

    def _guard_factory(self, method: str) -> Callable[[grpc.ServicerContext], Any]:
        return lambda context: self._guard(method, context)

    @contextmanager
    def _guard(self, method: str, context: grpc.ServicerContext) -> Iterator[_CallContext]:
        started = time.perf_counter()
        identity: Identity | None = None
        code = grpc.StatusCode.OK
        try:
            identity = self._admit(method, context)
            with self._stream_slot(method, _limit_key(identity, context)):
                yield _CallContext(context, identity)
        except Exception as exc:
            # the status the error interceptor (installed before this one) will answer with
            code = context.code() or status_of(exc)
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

    def _admit(self, method: str, context: grpc.ServicerContext) -> Identity:
        if method not in METHOD_ROLES:
            raise PermissionDenied(f"{method} has no access rule; refused")
        required = METHOD_ROLES[method]
        identity = self.authenticator.identify(
            context.invocation_metadata(), context.auth_context(), public=required is None
        )
        if required is not None:
            identity.require(required, method)
        self.limiter.admit(_limit_key(identity, context))
        return identity

    @contextmanager
    def _stream_slot(self, method: str, key: str) -> Iterator[None]:
        if method not in STREAMING:
            yield
            return
        with self.limiter.stream(key):
            self.observer.streams.inc()
            try:
                yield
            finally:
                self.observer.streams.dec()


def _limit_key(identity: Identity, context: grpc.ServicerContext) -> str:
    """Limits count per key or certificate; anonymous callers per peer address (port dropped)."""
    if identity.anonymous:
        return f"anonymous:{context.peer().rsplit(':', 1)[0]}"
    return identity.limit_key


def _guarded(behavior: Callable[[Any, Any], Any], guard: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        with guard(context) as call_context:
            return behavior(request, call_context)

    return call


def _guarded_stream(
    behavior: Callable[[Any, Any], Iterator[Any]], guard: Callable[[Any], Any]
) -> Callable[[Any, Any], Iterator[Any]]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with guard(context) as call_context:
            yield from behavior(request, call_context)

    return call
