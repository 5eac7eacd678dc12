"""Builds and runs the market's gRPC server on grpc.aio: the market service behind the error
and auth/limits interceptors, the standard health service, optional reflection, message-size
limits, and TLS or mTLS.

`MarketServer` runs the server's event loop on a thread of its own, so the CLI, the embedded
market and tests start and stop it from ordinary code; blocking market work goes to a bounded
pool (`workers.Workers`), so Health is answered whatever callers hold.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lmdock.common.errors import FailedPrecondition
from lmdock.common.grpc_errors import AioErrorStatusInterceptor
from lmdock.server.auth import AccessPolicy, Authenticator
from lmdock.server.interceptor import SERVICE, MarketInterceptor
from lmdock.server.limits import Limiter, RateLimits, StreamLimits
from lmdock.server.market import Market
from lmdock.server.observability import Observer
from lmdock.server.servicer import MarketServicer
from lmdock.server.workers import Workers
from lmdock.v1 import market_pb2_grpc as pb_grpc

__all__ = ["MarketServer", "ServerSettings", "ServerTLS", "create_server"]

T = TypeVar("T")


@dataclass(frozen=True)
class ServerTLS:
    """TLS with the server's certificate and key; with `client_ca`, mTLS (client certs required)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        def read(path: Path, what: str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise FailedPrecondition(f"cannot read the {what} {path}: {exc.strerror}") from None

        ca = read(self.client_ca_file, "client CA") if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(read(self.key_file, "TLS key"), read(self.cert_file, "TLS certificate"))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )


@dataclass(frozen=True)
class ServerSettings:
    #: Threads for blocking market work (database, files, checks); streams hold none while idle.
    max_workers: int = 16
    #: Chunks are 1 MiB; leave room for framing but refuse anything far larger.
    max_message_bytes: int = 4 * 1024 * 1024
    #: Calls beyond this many in flight are refused with RESOURCE_EXHAUSTED (None: no cap).
    max_concurrent_rpcs: int | None = 64
    rate_limits: RateLimits = field(default_factory=RateLimits)
    stream_limits: StreamLimits = field(default_factory=StreamLimits)
    reflection: bool = False


class MarketServer:
    """A bound (not yet started) market server; `start()`, then `stop(grace)`."""

    def __init__(
        self,
        market: Market,
        *,
        address: str,
        access: AccessPolicy,
        tls: ServerTLS | None,
        settings: ServerSettings,
        observer: Observer,
    ) -> None:
        self.workers = Workers(settings.max_workers)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="market-grpc", daemon=True)
        self._thread.start()
        try:
            self.port = self._call(self._bind(market, address, access, tls, settings, observer))
        except BaseException:
            self._close()
            raise

    async def _bind(
        self,
        market: Market,
        address: str,
        access: AccessPolicy,
        tls: ServerTLS | None,
        settings: ServerSettings,
        observer: Observer,
    ) -> int:
        limiter = Limiter(settings.rate_limits, settings.stream_limits)
        interceptor = MarketInterceptor(
            Authenticator(market.api_keys, access), limiter, observer, self.workers
        )
        self._server = grpc.aio.server(
            # errors first: it answers for the auth and limit checks too
            interceptors=[AioErrorStatusInterceptor("market"), interceptor],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        pb_grpc.add_MarketServiceServicer_to_server(MarketServicer(market, self.workers), self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        for name in ("", SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if settings.reflection:
            names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, self._server)
        if tls:
            port = self._server.add_secure_port(address, tls.credentials())
        else:
            port = self._server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        return port

    def start(self) -> None:
        self._call(self._server.start())

    def stop(self, grace: float | None = None) -> None:
        """Health turns NOT_SERVING first (watchers and balancers move away), then the calls in
        flight get `grace` seconds (None: none) before they are cancelled; blocks until done."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._shutdown(grace))
        finally:
            self._close()

    async def _shutdown(self, grace: float | None) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        # grpc.aio's objects must die on their loop, before grpc shuts its aio core down: calls
        # that ended with an error sit in reference cycles the collector would otherwise free
        # later, on another thread (a segfault)
        del self._server
        gc.collect()

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self.workers.shutdown()


def create_server(
    market: Market,
    *,
    address: str = "127.0.0.1:0",
    access: AccessPolicy | None = None,
    tls: ServerTLS | None = None,
    settings: ServerSettings = ServerSettings(),
    observer: Observer | None = None,
) -> tuple[MarketServer, int]:
    """A ready (not yet started) server bound to `address`; returns it and its port.

    Anonymous callers get nothing but public RPCs unless `access` says otherwise
    (`AccessPolicy.open_demo()` for a local, single-user market).
    """
    observer = observer or Observer()
    observer.learnwares.set_function(lambda: len(market.index))
    server = MarketServer(
        market,
        address=address,
        access=access or AccessPolicy(),
        tls=tls,
        settings=settings,
        observer=observer,
    )
    return server, server.port
