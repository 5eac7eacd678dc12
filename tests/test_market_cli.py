"""`lmdock-market` as a real process: serve (authenticated by default, TLS, metrics), keys, migrate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lmdock.client.connection import MarketClient, TlsOptions

from tests.certs import TestCA
from tests.market_helpers import status_of


def market_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmdock.server.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def serving(*args: str) -> Iterator[dict]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmdock.server.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grace",
            "1",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield json.loads(line)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_health_and_graceful_stop(tmp_path: Path) -> None:
    with serving("--data-dir", str(tmp_path / "m")) as ready:
        address = ready["listening"]
        assert address.startswith("127.0.0.1:")
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert (tmp_path / "m" / "profile.json").is_file()


def test_serve_reports_a_bad_profile_file_clearly(tmp_path: Path) -> None:
    data = tmp_path / "m"
    data.mkdir()
    (data / "profile.json").write_text('{"kernel": "cubic"}')
    proc = market_cli("serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", timeout=60)
    assert proc.returncode == 2
    assert "lmdock-market: error:" in proc.stderr


def test_keys_and_an_authenticated_market(tmp_path: Path) -> None:
    data = str(tmp_path / "m")
    created = market_cli(
        "keys", "create", "--data-dir", data, "--principal", "acme", "--role", "publisher", "--json"
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["api_key"].startswith(f"lmk_{key['key_id']}_")
    listed = json.loads(market_cli("keys", "list", "--data-dir", data, "--json").stdout)
    assert [(k["principal"], k["role"], k["revoked_at"]) for k in listed] == [("acme", "publisher", "")]
    assert "api_key" not in listed[0] and key["api_key"] not in json.dumps(listed)
    # no key cache: the revocation below comes from another process (the cache's bound: test_market_db)
    with serving("--data-dir", data, "--api-key-ttl", "0") as ready:
        with MarketClient(ready["listening"]) as anonymous:
            assert status_of(anonymous.profile) == "UNAUTHENTICATED"  # authenticated by default
        with MarketClient(ready["listening"], api_key=key["api_key"]) as acme:
            assert acme.whoami().principal == "acme"
            revoked = market_cli("keys", "revoke", "--data-dir", data, key["key_id"], "--json")
            assert json.loads(revoked.stdout)["revoked_at"]
            assert status_of(acme.whoami) == "UNAUTHENTICATED"  # takes effect while serving
    missing = market_cli("keys", "revoke", "--data-dir", data, "000000000000")
    assert missing.returncode == 6 and "no API key" in missing.stderr
    assert market_cli("migrate", "--data-dir", data).returncode == 0


def test_serve_tls_anonymous_consumers_and_metrics(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki", "ca")
    server = ca.issue("server", "localhost", server=True)
    args = ["--data-dir", str(tmp_path / "m"), "--tls-cert", str(server.cert), "--tls-key", str(server.key)]
    with serving(*args, "--allow-anonymous", "consumer", "--metrics-port", "0", "--reflection") as ready:
        tls = TlsOptions(ca_file=ca.issued.cert, pin_sha256=server.sha256)
        with MarketClient(ready["listening"], tls=tls) as client:
            assert client.whoami().role == "consumer"
            assert status_of(lambda: client.unpublish("x")) == "PERMISSION_DENIED"
        metrics = urllib.request.urlopen(ready["metrics"], timeout=10).read().decode()
        assert 'lmdock_rpc_calls_total{code="OK",method="WhoAmI"} 1.0' in metrics
    bad = market_cli("serve", "--data-dir", str(tmp_path / "m"), "--tls-cert", str(server.cert), timeout=60)
    assert bad.returncode == 2 and "--tls-key" in bad.stderr
