"""Builds the gRPC server: market service, standard health service, message limits."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lmdock.server.market import Market
from lmdock.server.servicer import MarketServicer
from lmdock.v1 import market_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "create_server"]

SERVICE_NAME = "lmdock.v1.MarketService"
#: Chunks are 1 MiB; leave room for framing but refuse anything far larger.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def create_server(
    market: Market, *, address: str = "127.0.0.1:0", max_workers: int = 16
) -> tuple[grpc.Server, int]:
    """A started-ready (not yet started) server bound to `address`; returns it and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    pb_grpc.add_MarketServiceServicer_to_server(MarketServicer(market), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port
