"""Errors as the HTTP API answers them: a status and the OpenAI API's error object, decided here once.

lmdock's typed errors (`common/errors.py`) map by their status; refusals of the HTTP layer
itself (size, media type, routes) arrive as Starlette's HTTPException. Every 429 says when to
come back (`Retry-After`), every 401 how to authenticate (`WWW-Authenticate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from lmdock.client.daemon.openai_schema import error_body
from lmdock.common.errors import InvalidArgument, LmdockError, NotFound
from starlette.responses import JSONResponse

__all__ = ["AUTH_HINT", "RETRY_AFTER_S", "error_response", "typed_error_body", "typed_error_response"]

RETRY_AFTER_S = 1
AUTH_HINT = (
    "missing or wrong bearer token: send 'Authorization: Bearer <token>' (the token is in api.token_file)"
)
_STATUS = {
    "INVALID_ARGUMENT": (HTTPStatus.BAD_REQUEST, "invalid_request_error"),
    "NOT_FOUND": (HTTPStatus.NOT_FOUND, "not_found_error"),
    "ALREADY_EXISTS": (HTTPStatus.CONFLICT, "invalid_request_error"),
    "UNAUTHENTICATED": (HTTPStatus.UNAUTHORIZED, "authentication_error"),
    "PERMISSION_DENIED": (HTTPStatus.FORBIDDEN, "permission_error"),
    "RESOURCE_EXHAUSTED": (HTTPStatus.TOO_MANY_REQUESTS, "rate_limit_error"),
    "FAILED_PRECONDITION": (HTTPStatus.SERVICE_UNAVAILABLE, "service_unavailable_error"),
    "UNAVAILABLE": (HTTPStatus.SERVICE_UNAVAILABLE, "service_unavailable_error"),
}
_UNMAPPED = (HTTPStatus.INTERNAL_SERVER_ERROR, "api_error")
_KIND_OF_STATUS: dict[int, str] = {
    HTTPStatus.UNAUTHORIZED: "authentication_error",
    HTTPStatus.NOT_FOUND: "not_found_error",
    HTTPStatus.TOO_MANY_REQUESTS: "rate_limit_error",
    HTTPStatus.INTERNAL_SERVER_ERROR: "api_error",
}


def error_response(
    status: int,
    message: str,
    *,
    kind: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """`kind` (the error object's `type`) defaults to the usual one for `status`."""
    kind = kind or _KIND_OF_STATUS.get(status, "invalid_request_error")
    extra = _headers(status) | dict(headers or {})
    return JSONResponse(error_body(message, kind, code, param), status_code=status, headers=extra)


def _headers(status: int) -> dict[str, str]:
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return {"Retry-After": str(RETRY_AFTER_S)}
    if status == HTTPStatus.UNAUTHORIZED:
        return {"WWW-Authenticate": 'Bearer realm="lmdock"'}
    return {}


def typed_error_response(exc: LmdockError) -> JSONResponse:
    status, _ = _STATUS.get(exc.status, _UNMAPPED)
    return JSONResponse(typed_error_body(exc), status_code=status, headers=_headers(status))


def typed_error_body(exc: LmdockError) -> dict[str, Any]:
    """The error object of a typed error (also what a stream sends when it fails midway)."""
    _, kind = _STATUS.get(exc.status, _UNMAPPED)
    code = "model_not_found" if isinstance(exc, NotFound) else None
    param = exc.param if isinstance(exc, InvalidArgument) else None
    return error_body(str(exc), kind, code, param)
