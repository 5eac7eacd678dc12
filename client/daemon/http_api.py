"""The OpenAI-compatible HTTP API, on the standard library's ThreadingHTTPServer.

Why the standard library: the API is four JSON routes behind a bearer token on the loopback
interface, and the work behind each route is model inference that the pool serializes per
base model anyway; http.server covers that with no new dependency to audit or pin.

Every route needs `Authorization: Bearer <token>`. Bodies are limited in size, and
answers are JSON (or server-sent events when `stream` is true). The log records method,
path, status, model and time — never prompts or answers.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lmdock.client.daemon import openai_schema as schema
from lmdock.client.daemon.auth import bearer_matches
from lmdock.client.daemon.config import parse_address
from lmdock.client.daemon.core import Daemon
from lmdock.common.errors import InvalidArgument, LmdockError, NotFound

__all__ = ["OpenAIServer"]

log = logging.getLogger(__name__)

_STATUS = {
    "INVALID_ARGUMENT": (HTTPStatus.BAD_REQUEST, "invalid_request_error"),
    "NOT_FOUND": (HTTPStatus.NOT_FOUND, "not_found_error"),
    "ALREADY_EXISTS": (HTTPStatus.CONFLICT, "invalid_request_error"),
    "UNAUTHENTICATED": (HTTPStatus.UNAUTHORIZED, "authentication_error"),
    "PERMISSION_DENIED": (HTTPStatus.FORBIDDEN, "permission_error"),
    "RESOURCE_EXHAUSTED": (HTTPStatus.TOO_MANY_REQUESTS, "rate_limit_error"),
    "FAILED_PRECONDITION": (HTTPStatus.SERVICE_UNAVAILABLE, "service_unavailable_error"),
}
READ_TIMEOUT_S = 60


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], daemon: Daemon, token: str) -> None:
        self.lmdock = daemon
        self.token = token
        self.in_flight = 0  # requests being answered (idle keep-alive connections do not count)
        self.idle = threading.Condition()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: every JSON answer carries a Content-Length
    server_version = "lmdock-daemon"
    sys_version = ""
    timeout = READ_TIMEOUT_S
    error_content_type = "application/json"

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own lines (malformed requests) go to our log, at debug level."""
        log.debug("http %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        with self.server.idle:
            self.server.in_flight += 1
        try:
            self._answer(method)
        finally:
            with self.server.idle:
                self.server.in_flight -= 1
                self.server.idle.notify_all()

    def _answer(self, method: str) -> None:
        started = time.monotonic()
        self._model = "-"
        self._body_read = False
        status = HTTPStatus.OK
        try:
            if not bearer_matches(self.headers.get("Authorization"), self.server.token):
                status = self._error(
                    HTTPStatus.UNAUTHORIZED, "authentication_error", _AUTH_HINT, "invalid_api_key"
                )
            else:
                status = self._route(method)
        except LmdockError as exc:
            code, kind = _STATUS.get(exc.status, (HTTPStatus.INTERNAL_SERVER_ERROR, "api_error"))
            status = self._error(code, kind, str(exc), _code_for(exc))
        except Exception as exc:  # our bug: log the type and traceback, never the request
            log.exception("internal error serving %s %s (%s)", method, self.path, type(exc).__name__)
            status = self._error(
                HTTPStatus.INTERNAL_SERVER_ERROR, "api_error", "internal error; see the daemon's log"
            )
        log.info(
            "%s %s model=%s -> %d in %.0f ms",
            method,
            self.path,
            self._model,
            status,
            (time.monotonic() - started) * 1e3,
        )

    def _route(self, method: str) -> HTTPStatus:
        daemon = self.server.lmdock
        path = self.path.split("?", 1)[0].rstrip("/")
        if method == "GET" and path == "/v1/models":
            return self._json({"object": "list", "data": [schema.model_object(r) for r in daemon.models()]})
        if method == "GET" and path.startswith("/v1/models/"):
            self._model = path.removeprefix("/v1/models/")
            matches = [r for r in daemon.models() if r.name == self._model]
            if not matches:
                raise NotFound(
                    f"model {self._model!r} does not exist or is not ready; GET /v1/models lists them"
                )
            return self._json(schema.model_object(matches[0]))
        if method == "POST" and path == "/v1/completions":
            model, prompts, options, stream = schema.parse_completion(self._body())
            self._model = model
            result = daemon.complete(model, prompts, options)
            if stream:
                return self._events(schema.completion_chunks(result))
            return self._json(schema.completion_response(result))
        if method == "POST" and path == "/v1/chat/completions":
            model, messages, options, stream = schema.parse_chat(
                self._body(), daemon.config.runtime.max_new_tokens
            )
            self._model = model
            result = daemon.chat(model, messages, options)
            if stream:
                return self._events(schema.chat_chunks(result))
            return self._json(schema.chat_response(result))
        allowed = "GET /v1/models, POST /v1/completions, POST /v1/chat/completions"
        return self._error(
            HTTPStatus.NOT_FOUND, "not_found_error", f"no route {method} {path}; the API has {allowed}"
        )

    def _body(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise InvalidArgument(
                "send the body with a Content-Length header (chunked bodies are not supported)"
            )
        limit = self.server.lmdock.config.api.max_request_bytes
        if int(length) > limit:
            raise InvalidArgument(
                f"the body is {length} bytes, more than the limit of {limit} (api.max_request_bytes)"
            )
        raw = self.rfile.read(int(length))
        self._body_read = True
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidArgument(f"the body is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise InvalidArgument("the body must be a JSON object")
        return body

    def _json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> HTTPStatus:
        data = json.dumps(value).encode()
        if self.command == "POST" and not self._body_read:
            self.close_connection = True  # an unread body would be taken for the next request
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="lmdock"')
        self.end_headers()
        self.wfile.write(data)
        return status

    def _events(self, chunks: list[dict[str, Any]]) -> HTTPStatus:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # no length: the end of the stream ends the answer
        self.end_headers()
        self.close_connection = True
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        return HTTPStatus.OK

    def _error(self, status: HTTPStatus, kind: str, message: str, code: str | None = None) -> HTTPStatus:
        return self._json({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


_AUTH_HINT = (
    "missing or wrong bearer token: send 'Authorization: Bearer <token>' (the token is in api.token_file)"
)


def _code_for(exc: LmdockError) -> str | None:
    return "model_not_found" if isinstance(exc, NotFound) else None


class OpenAIServer:
    """Serves `daemon` over HTTP on `address` (port 0: any free port) from a background thread."""

    def __init__(self, daemon: Daemon, *, address: str, token: str) -> None:
        self._server = _Server(parse_address(address, where="api.http"), daemon, token)
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, grace_s: float = 10.0) -> None:
        """Stop accepting requests and wait (up to `grace_s`) for those being answered."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with self._server.idle:
            self._server.idle.wait_for(lambda: self._server.in_flight == 0, timeout=grace_s)
