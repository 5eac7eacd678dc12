"""The HTTP API's outer layer (plain ASGI): CORS, the token, admission, the access log, a last resort.

It runs on the event loop before any route and costs no thread, so it answers even when every
inference thread is busy:

* cross-origin access as `http_cors.CorsPolicy` decides (preflights are answered before the
  token is checked: browsers send them without it);
* no `Authorization: Bearer <token>` header matching the daemon's token: 401. Only the header
  counts; a token in the query string is ignored (and, like the whole query string, never logged);
* more than `max_in_flight` requests being answered: 429 with `Retry-After`, never a reset;
* one access line per request: method, path without the query string, model, status, time —
  never headers, prompts or answers, and nothing that could forge a line;
* an exception nothing mapped: 500 with a fixed body, and one log line naming its type and
  where it was raised, never its message (which may quote the request).
"""

from __future__ import annotations

import logging
import time
import traceback
from http import HTTPStatus

from lmdock.client.daemon.auth import bearer_matches
from lmdock.client.daemon.config import TASK_NAME
from lmdock.client.daemon.http_cors import CorsPolicy
from lmdock.client.daemon.http_errors import AUTH_HINT, error_response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["INTERNAL", "Guard"]

log = logging.getLogger(__name__)
INTERNAL = "internal error; see the daemon's log"


class Guard:
    def __init__(self, app: ASGIApp, *, token: str, max_in_flight: int, cors: CorsPolicy) -> None:
        self.app = app
        self.token = token
        self.max_in_flight = max_in_flight
        self.cors = cors
        self.in_flight = 0  # only the event loop's thread touches it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        started = time.monotonic()
        status = 0
        cors_headers = self.cors.headers(scope)

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if cors_headers:
                    message = {**message, "headers": [*message.get("headers", []), *cors_headers]}
            await send(message)

        try:
            await self._admit(scope, receive, watched)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "internal error serving %s %s: %s at %s:%s",
                scope["method"],
                _path(scope),
                type(exc).__name__,
                where.filename,
                where.lineno,
            )
            if not status:
                await error_response(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL)(scope, receive, watched)
        elapsed_ms = (time.monotonic() - started) * 1e3
        log.info(
            "%s %s model=%s -> %d in %.0f ms",
            scope["method"],
            _path(scope),
            _model(scope),
            status,
            elapsed_ms,
        )

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        preflight = self.cors.preflight(scope)
        if preflight is not None:
            return await preflight(scope, receive, send)
        if not bearer_matches(Headers(scope=scope).get("authorization"), self.token):
            refusal = error_response(HTTPStatus.UNAUTHORIZED, AUTH_HINT, code="invalid_api_key")
            return await refusal(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            busy = f"{self.max_in_flight} requests are in flight (api.max_concurrent); retry shortly"
            return await error_response(HTTPStatus.TOO_MANY_REQUESTS, busy)(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def _path(scope: Scope) -> str:
    """The path as sent (percent-encoded, so printable ASCII: no forged log lines); no query."""
    return bytes(scope["raw_path"]).decode("ascii", "replace")


def _model(scope: Scope) -> str:
    """The model a route named, when it could be a task's name (others may hold anything)."""
    model = scope.get("state", {}).get("model")
    if model is None:
        return "-"
    return model if TASK_NAME.fullmatch(model) else "(not a task name)"
