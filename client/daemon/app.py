"""The running daemon: the service, its two local APIs, the run file, and a clean stop."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any

from lmdock.client.daemon.auth import load_or_create_token
from lmdock.client.daemon.config import DaemonConfig
from lmdock.client.daemon.core import Daemon
from lmdock.client.daemon.http_server import OpenAIServer
from lmdock.client.daemon.local_grpc import create_local_server
from lmdock.client.daemon.runfile import RunInfo, hold_lock, remove_runfile, write_runfile
from lmdock.client.files import open_private, private_dir
from lmdock.common.errors import FailedPrecondition

__all__ = ["RunningDaemon", "serve"]

log = logging.getLogger("lmdock.daemon")
STOP_GRACE_S = 10


class RunningDaemon:
    """`start()` listens and starts preparing tasks; `stop()` drains requests and cleans up."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.daemon: Daemon | None = None
        self._lock: IO[str] | None = None
        self._grpc: Any = None
        self._http: OpenAIServer | None = None

    def start(self) -> Daemon:
        config = self.config
        self._lock = hold_lock(config.state_dir)
        try:
            token = load_or_create_token(config.token_file)
            daemon = self.daemon = Daemon(config)
            try:
                self._grpc, port = create_local_server(daemon, address=config.api.grpc, token=token)
            except (OSError, RuntimeError) as exc:
                raise FailedPrecondition(f"cannot listen on api.grpc = {config.api.grpc}: {exc}") from None
            host = config.api.grpc.rpartition(":")[0]
            daemon.grpc_address = f"{host}:{port}"
            if config.api.http:
                try:
                    self._http = OpenAIServer(
                        daemon, address=config.api.http, token=token, grace_s=STOP_GRACE_S
                    )
                except OSError as exc:
                    raise FailedPrecondition(
                        f"cannot listen on api.http = {config.api.http}: {exc}"
                    ) from None
                daemon.http_address = self._http.address
                self._http.start()
            self._grpc.start()
            write_runfile(
                config.state_dir,
                RunInfo(
                    pid=os.getpid(),
                    http=daemon.http_address,
                    grpc=daemon.grpc_address,
                    started_at=daemon.started_at,
                ),
            )
            daemon.start()
        except BaseException:
            self.stop()
            raise
        log.info("daemon ready: http %s, grpc %s", daemon.http_address or "off", daemon.grpc_address)
        return daemon

    def stop(self) -> None:
        """Stop preparing tasks (cancelled, to start over next time), stop listening, let requests
        in flight finish (up to a grace period), release everything."""
        if self.daemon is not None:
            self.daemon.stop_preparing()  # first: a `task add` waiting on one gets its answer now
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=STOP_GRACE_S).wait()
            self._grpc = None
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None
        if self._lock is not None:
            remove_runfile(self.config.state_dir)
            self._lock.close()
            self._lock = None


def configure_logging(config: DaemonConfig) -> None:
    """Daemon logs: timestamped lines to daemon.log_file, else standard error."""
    handler: logging.Handler
    if config.daemon.log_file:
        log_file = Path(config.daemon.log_file)
        private_dir(log_file.parent)
        os.close(open_private(log_file, os.O_WRONLY | os.O_APPEND))  # owner-only before the handler opens it
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("lmdock", "uvicorn"):  # uvicorn's own lines: refused connections, shutdown
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(config.daemon.log_level.upper())
        logger.propagate = False


def serve(config: DaemonConfig, *, as_json: bool = False) -> int:
    """Run until SIGTERM or SIGINT, then stop cleanly; returns the exit code.

    Once listening it prints where (for people on standard error, or with `as_json` one JSON
    line on standard output).
    """
    configure_logging(config)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    running = RunningDaemon(config)
    try:
        daemon = running.start()
        http = f"http://{daemon.http_address}/v1" if daemon.http_address else ""
        if as_json:
            ready = {
                "pid": os.getpid(),
                "http": http,
                "grpc": daemon.grpc_address,
                "token_file": str(config.token_file),
            }
            print(json.dumps(ready), flush=True)
        else:
            print(
                f"lmdock daemon ready (pid {os.getpid()})\n"
                f"  OpenAI-compatible API  {http or 'off'}\n"
                f"  local gRPC API         {daemon.grpc_address}\n"
                f"  bearer token in        {config.token_file}",
                file=sys.stderr,
                flush=True,
            )
        stop.wait()
        log.info("stopping: finishing requests in flight")
    finally:
        running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped")
    return 0
