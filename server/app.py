"""Builds the gRPC server: market service behind the error and auth/limits interceptors,
standard health service, optional reflection, message-size limits, and TLS or mTLS."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lmdock.common.errors import FailedPrecondition
from lmdock.common.grpc_errors import ErrorStatusInterceptor
from lmdock.server.auth import AccessPolicy, Authenticator
from lmdock.server.interceptor import SERVICE, MarketInterceptor
from lmdock.server.limits import Limiter, RateLimits
from lmdock.server.market import Market
from lmdock.server.observability import Observer
from lmdock.server.servicer import MarketServicer
from lmdock.v1 import market_pb2_grpc as pb_grpc

__all__ = ["ServerSettings", "ServerTLS", "create_server"]


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
    max_workers: int = 16
    #: Chunks are 1 MiB; leave room for framing but refuse anything far larger.
    max_message_bytes: int = 4 * 1024 * 1024
    #: Calls beyond this many in flight are refused with RESOURCE_EXHAUSTED (None: no cap).
    max_concurrent_rpcs: int | None = 64
    rate_limits: RateLimits = field(default_factory=RateLimits)
    reflection: bool = False


def create_server(
    market: Market,
    *,
    address: str = "127.0.0.1:0",
    access: AccessPolicy | None = None,
    tls: ServerTLS | None = None,
    settings: ServerSettings = ServerSettings(),
    observer: Observer | None = None,
) -> tuple[grpc.Server, int]:
    """A ready (not yet started) server bound to `address`; returns it and its port.

    Anonymous callers get nothing but public RPCs unless `access` says otherwise
    (`AccessPolicy.open_demo()` for a local, single-user market).
    """
    observer = observer or Observer()
    observer.learnwares.set_function(lambda: len(market.index))
    interceptor = MarketInterceptor(
        Authenticator(market.api_keys, access or AccessPolicy()), Limiter(settings.rate_limits), observer
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers),
        # errors first: it answers for the auth and limit checks too
        interceptors=[ErrorStatusInterceptor("market"), interceptor],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    pb_grpc.add_MarketServiceServicer_to_server(MarketServicer(market), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if settings.reflection:
        reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port
