"""The daemon reaches a TLS market with a CA file and its API key, as configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from lmdock.client.connection import MarketClient, TlsOptions
from lmdock.client.daemon.config import TaskSettings
from lmdock.common.errors import LmdockError
from lmdock.server.app import ServerTLS
from lmdock.server.auth import AccessPolicy
from lmdock.server.identity import Role

from tests.certs import TestCA
from tests.daemon_support import TRIAGE, packages, running, write_config
from tests.market_helpers import running_market

__all__ = ["packages"]  # the fixture, imported for pytest


def test_tls_market_with_an_api_key(packages: list[Path], tmp_path: Path, profile) -> None:
    ca = TestCA(tmp_path / "pki", "market-ca")
    server = ca.issue("server", "localhost", server=True)
    tls = ServerTLS(cert_file=server.cert, key_file=server.key)
    with running_market(
        tmp_path / "market", profile, allow_local_base_models=True, access=AccessPolicy.open_demo(), tls=tls
    ) as market:
        with MarketClient(market.address, tls=TlsOptions(ca_file=ca.issued.cert)) as publisher:
            for package in packages:
                publisher.upload(package)
        _, key = market.market.api_keys.create("hospital", Role.CONSUMER)
        key_file = tmp_path / "market-api-key"
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        secure = f'tls_ca = "{ca.issued.cert}"\napi_key_file = "{key_file}"'
        config = write_config(tmp_path / "ok", market=market.address, market_extra=secure)
        with running(config) as daemon:
            record = daemon.add_task(TaskSettings(name="triage", learnware=TRIAGE))
            assert record.state == "ready" and record.bytes_sent > 0

        key_file.write_text("not-a-key-the-market-issued\n")  # a key the market does not know
        config = write_config(tmp_path / "bad-key", market=market.address, market_extra=secure)
        with running(config) as daemon, pytest.raises(LmdockError) as refused:
            daemon.add_task(TaskSettings(name="triage", learnware=TRIAGE))
        assert refused.value.status == "UNAUTHENTICATED"

        plain = write_config(tmp_path / "plain", market=market.address)  # no TLS: no handshake
        with running(plain) as daemon, pytest.raises(LmdockError) as refused:
            daemon.add_task(TaskSettings(name="triage", learnware=TRIAGE))
        assert refused.value.status == "UNAVAILABLE"
