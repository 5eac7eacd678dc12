"""TLS and mTLS handshakes with certificates made in the test, wrong CAs, and certificate pins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmdock.client import cli
from lmdock.client.connection import MarketClient, TlsOptions
from lmdock.common.errors import IntegrityError, InvalidArgument
from lmdock.server.app import ServerTLS
from lmdock.server.identity import Role

from tests.certs import TestCA, self_signed_server
from tests.market_helpers import running_market, status_of


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("pki")
    ca, clients, rogue = TestCA(folder, "market-ca"), TestCA(folder, "client-ca"), TestCA(folder, "rogue-ca")
    return {
        "ca": ca.issued,
        "server": ca.issue("server", "localhost", server=True),
        "client_ca": clients.issued,
        "acme": clients.issue("acme", "acme", ou="publisher"),
        "carol": clients.issue("carol", "carol"),
        "rogue_ca": rogue.issued,
        "rogue_server": rogue.issue("rogue-server", "localhost", server=True),
        "rogue_client": rogue.issue("mallory", "mallory", ou="admin"),
        "self_signed": self_signed_server(folder),
    }


def tls_market(tmp_path: Path, profile, server, client_ca=None):
    return running_market(
        tmp_path / "market",
        profile,
        tls=ServerTLS(cert_file=server.cert, key_file=server.key, client_ca_file=client_ca),
    )


def test_tls_with_an_api_key(tmp_path: Path, profile, pki) -> None:
    with tls_market(tmp_path, profile, pki["server"]) as running:
        _, key = running.market.api_keys.create("carol", Role.CONSUMER)
        with MarketClient(running.address, tls=TlsOptions(ca_file=pki["ca"].cert), api_key=key) as client:
            assert client.whoami().principal == "carol"
            assert client.profile() == profile
        with MarketClient(running.address, tls=TlsOptions(ca_file=pki["ca"].cert)) as client:
            assert status_of(client.whoami) == "UNAUTHENTICATED"  # TLS alone is no identity
        for wrong in (TlsOptions(ca_file=pki["rogue_ca"].cert), None):  # wrong CA; plaintext
            with MarketClient(running.address, tls=wrong, api_key=key, timeout=5) as client:
                assert status_of(client.profile) == "UNAVAILABLE"


def test_client_refuses_a_server_signed_by_another_ca(tmp_path: Path, profile, pki) -> None:
    with tls_market(tmp_path, profile, pki["rogue_server"]) as running:
        _, key = running.market.api_keys.create("carol", Role.CONSUMER)
        with MarketClient(
            running.address, tls=TlsOptions(ca_file=pki["ca"].cert), api_key=key, timeout=5
        ) as c:
            assert status_of(c.profile) == "UNAVAILABLE"


def test_mtls_identity_comes_from_the_certificate(tmp_path: Path, profile, pki) -> None:
    with tls_market(tmp_path, profile, pki["server"], client_ca=pki["client_ca"].cert) as running:

        def client(cert=None, timeout=20.0) -> MarketClient:
            tls = TlsOptions(
                ca_file=pki["ca"].cert,
                cert_file=cert.cert if cert else None,
                key_file=cert.key if cert else None,
            )
            return MarketClient(running.address, tls=tls, timeout=timeout)

        with client(pki["acme"]) as acme:
            me = acme.whoami()
            assert (me.principal, me.role, me.authenticated_by) == ("acme", "publisher", "mtls")
        with client(pki["carol"]) as carol:
            assert carol.whoami().role == "consumer"  # no role OU: consumer
            assert status_of(lambda: carol.unpublish("anything")) == "PERMISSION_DENIED"
        for refused in (pki["rogue_client"], None):  # a cert from another CA; no cert at all
            with client(refused, timeout=5) as c:
                assert status_of(c.whoami) == "UNAVAILABLE"


def test_pinning(tmp_path: Path, profile, pki) -> None:
    with tls_market(tmp_path, profile, pki["server"]) as running:
        _, key = running.market.api_keys.create("carol", Role.CONSUMER)
        pinned = TlsOptions(ca_file=pki["ca"].cert, pin_sha256=pki["server"].sha256.upper())
        with MarketClient(running.address, tls=pinned, api_key=key) as client:
            assert client.profile() == profile
        wrong_pin = TlsOptions(ca_file=pki["ca"].cert, pin_sha256=pki["rogue_server"].sha256)
        with pytest.raises(IntegrityError, match="not the pinned"):
            MarketClient(running.address, tls=wrong_pin, api_key=key)  # refused before any RPC
    with tls_market(tmp_path / "self", profile, pki["self_signed"]) as running:
        _, key = running.market.api_keys.create("carol", Role.CONSUMER)
        pin_only = TlsOptions(
            pin_sha256=":".join(pki["self_signed"].sha256[i : i + 2] for i in range(0, 64, 2))
        )
        with MarketClient(running.address, tls=pin_only, api_key=key) as client:
            assert client.profile() == profile


def test_the_cli_speaks_tls_and_honours_pins(tmp_path: Path, profile, pki, capsys, monkeypatch) -> None:
    with tls_market(tmp_path, profile, pki["server"]) as running:
        _, key = running.market.api_keys.create("carol", Role.CONSUMER)
        monkeypatch.setenv("LMDOCK_API_KEY", key)
        base = ["list", "--market", running.address, "--json", "--tls-ca", str(pki["ca"].cert)]
        assert cli.main(base) == 0
        assert json.loads(capsys.readouterr().out) == []
        assert cli.main([*base, "--tls-pin", pki["rogue_server"].sha256]) == 7
        assert "not the pinned" in capsys.readouterr().err
        monkeypatch.delenv("LMDOCK_API_KEY")
        assert cli.main(base) == 4
        assert "needs credentials" in capsys.readouterr().err


def test_api_keys_never_travel_in_clear_beyond_loopback() -> None:
    with pytest.raises(InvalidArgument, match="without TLS"):
        MarketClient("192.0.2.1:50051", api_key="lmk_x")  # refused before any connection
    with pytest.raises(InvalidArgument, match="pin"):
        TlsOptions(pin_sha256="abc")
