"""Cross-origin access to the HTTP API: off unless the config names the origin (api.cors_origins).

A web page on another origin may call the API only when its origin is listed; it still needs
the bearer token, like anyone. `Guard` asks this policy two things:

* a preflight (OPTIONS with Origin and Access-Control-Request-Method; browsers send it without
  credentials, so it is answered before the token is checked): 204 with the CORS headers for a
  listed origin, 403 naming the config key for any other (and for all, when none are listed);
* any other request from a listed origin gets Access-Control-Allow-Origin on its answer, its
  refusals (401, 429) included, so the page can read why; others get no CORS header at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus

from lmdock.client.daemon.http_errors import error_response
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

__all__ = ["CorsPolicy"]

METHODS = "GET, POST"
MAX_AGE_S = 600
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


class CorsPolicy:
    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(origins)

    def preflight(self, scope: Scope) -> Response | None:
        """The answer to a preflight request, or None when `scope` is not one."""
        headers = Headers(scope=scope)
        if scope["method"] != "OPTIONS" or "access-control-request-method" not in headers:
            return None
        origin = headers.get("origin", "")
        if origin not in self.origins:
            why = "no origin is allowed" if not self.origins else f"the origin {origin!r} is not listed"
            message = f"cross-origin requests are refused: {why} in api.cors_origins"
            return error_response(HTTPStatus.FORBIDDEN, message, kind="permission_error")
        # Access-Control-Allow-Origin and the rest come with every answer to a listed origin (`headers`)
        allow = {"Access-Control-Allow-Methods": METHODS, "Access-Control-Max-Age": str(MAX_AGE_S)}
        requested = headers.get("access-control-request-headers", "")
        if _HEADER_LIST.match(requested):  # the page's own headers (the OpenAI SDKs send several)
            allow["Access-Control-Allow-Headers"] = requested
        return Response(status_code=HTTPStatus.NO_CONTENT, headers=allow)

    def headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """CORS headers for the answer to a (non-preflight) request: none unless its origin is listed."""
        origin = Headers(scope=scope).get("origin", "")
        if origin not in self.origins:
            return []
        return [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-expose-headers", b"Retry-After"),
            (b"vary", b"Origin"),
        ]
