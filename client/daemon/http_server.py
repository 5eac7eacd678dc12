"""uvicorn serving the HTTP API on a thread of its own, with its own event loop.

The listening socket is bound here, before the thread starts, so a busy port fails `start` at
once and port 0 reports the port it got. uvicorn runs on h11 (pure Python, strict about
framing: a bad or doubled Content-Length is a 400 before any of our code runs), without its own
access log (ours leaves the query string out), websockets, lifespan or proxy-header handling.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn
from lmdock.client.daemon.config import parse_address
from lmdock.client.daemon.core import Daemon
from lmdock.client.daemon.http_api import create_app
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["OpenAIServer"]

BACKLOG = 2048  # connections the kernel queues while the loop is busy: a burst waits, never resets
KEEP_ALIVE_S = 5


class _Protocol(H11Protocol):
    """h11 without uvicorn's access line (it writes the query string), whatever logging says.

    uvicorn decides per connection from its logger's handlers, which any later logging set-up
    can bring back; our own line is written by `Guard`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = False


class OpenAIServer:
    """Serves `daemon` over HTTP on `address` (port 0: any free port) from a background thread.

    `stop` stops accepting, lets requests being answered finish for up to `grace_s`, then
    cancels what is left.
    """

    def __init__(self, daemon: Daemon, *, address: str, token: str, grace_s: int = 10) -> None:
        host, port = parse_address(address, where="api.http")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=BACKLOG)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.address = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        config = uvicorn.Config(
            create_app(daemon, token=token),
            http=_Protocol,
            ws="none",  # no websockets route: not even the library (flwr installs it) is loaded
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            headers=[("server", "lmdock-daemon")],
            backlog=BACKLOG,
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=grace_s,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="http-api", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join()
        self._socket.close()
