"""Web pages on other origins cannot use the daemon's HTTP API unless the config lists their origin.

A page a user visits could otherwise drive the loopback API from the user's browser. Off by
default: a preflight is refused with 403 and no answer carries a CORS header. With
api.cors_origins, only the listed origins get them, and they still need the token.
"""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
from lmdock.client.daemon.config import ApiSettings
from lmdock.client.daemon.core import Daemon
from lmdock.common.errors import InvalidArgument

from tests.daemon_support import running, token_of, write_config

ALLOWED = "https://notes.hospital.example"
OTHER = "https://evil.example"


def _ask(daemon: Daemon, method: str, origin: str, **headers: str) -> http.client.HTTPResponse:
    host, port = daemon.http_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(method, "/v1/models", headers={"Origin": origin, **headers})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def _preflight(daemon: Daemon, origin: str) -> http.client.HTTPResponse:
    return _ask(
        daemon,
        "OPTIONS",
        origin,
        **{
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, x-stainless-os",
        },
    )


def test_cross_origin_requests_are_refused_by_default(tmp_path: Path) -> None:
    with running(write_config(tmp_path, market="")) as daemon:
        refused = _preflight(daemon, ALLOWED)
        assert refused.status == 403 and refused.getheader("Access-Control-Allow-Origin") is None
        answer = _ask(daemon, "GET", ALLOWED, Authorization=f"Bearer {token_of(daemon)}")
        assert answer.status == 200 and answer.getheader("Access-Control-Allow-Origin") is None


def test_only_listed_origins_may_call_and_still_need_the_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, market="", extra=f'cors_origins = ["{ALLOWED}"]')
    with running(config) as daemon:
        allowed = _preflight(daemon, ALLOWED)
        assert allowed.status == 204 and allowed.getheader("Access-Control-Allow-Origin") == ALLOWED
        assert "POST" in allowed.getheader("Access-Control-Allow-Methods", "")
        assert allowed.getheader("Access-Control-Allow-Headers") == "authorization, x-stainless-os"
        assert _preflight(daemon, OTHER).status == 403

        token = f"Bearer {token_of(daemon)}"
        answer = _ask(daemon, "GET", ALLOWED, Authorization=token)
        assert answer.status == 200 and answer.getheader("Access-Control-Allow-Origin") == ALLOWED
        unauthenticated = _ask(daemon, "GET", ALLOWED)  # the page can read why, but gets nothing
        assert (
            unauthenticated.status == 401
            and unauthenticated.getheader("Access-Control-Allow-Origin") == ALLOWED
        )
        other = _ask(daemon, "GET", OTHER, Authorization=token)
        assert other.getheader("Access-Control-Allow-Origin") is None


@pytest.mark.parametrize("origin", ["*", "https://notes.example/", "notes.example", "https://Notes.example"])
def test_an_allowlist_entry_must_be_one_exact_origin(origin: str) -> None:
    with pytest.raises(InvalidArgument, match=r"api\.cors_origins: .* is not an origin"):
        ApiSettings(cors_origins=(origin,))
