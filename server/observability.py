"""Structured access logs and (optional) Prometheus metrics for every RPC.

Each call logs one JSON object on the `lmdock.market.access` logger: method, caller, role,
status code, duration and peer -- never request contents (specs, package bytes, keys).
Metrics go to a registry of their own (one per server), served over HTTP on 127.0.0.1 only
when the operator asks for it (`lmdock-market serve --metrics-port`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Observer", "serve_metrics"]

access_log = logging.getLogger("lmdock.market.access")


class Observer:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.calls = Counter(
            "lmdock_rpc_calls",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "lmdock_rpc_seconds", "RPC duration in seconds, by method", ["method"], registry=self.registry
        )
        self.streams = Gauge(
            "lmdock_open_streams", "Download/Upload streams in progress", registry=self.registry
        )
        self.learnwares = Gauge("lmdock_learnwares", "Learnwares in the search index", registry=self.registry)

    def record(self, *, method: str, code: str, seconds: float, principal: str, role: str, peer: str) -> None:
        self.calls.labels(method=method, code=code).inc()
        self.seconds.labels(method=method).observe(seconds)
        if not access_log.isEnabledFor(logging.INFO):  # nobody reads the line: skip encoding it
            return
        entry: dict[str, Any] = {
            "event": "rpc",
            "method": method,
            "code": code,
            "ms": round(seconds * 1000, 2),
            "principal": principal,
            "role": role,
            "peer": peer,
        }
        access_log.info(json.dumps(entry, sort_keys=True))


def serve_metrics(observer: Observer, *, port: int, address: str = "127.0.0.1") -> tuple[Any, int]:
    """Start the /metrics HTTP endpoint; returns (http server, bound port). Stop with .shutdown()."""
    server, _thread = start_http_server(port, addr=address, registry=observer.registry)
    return server, int(server.server_port)
