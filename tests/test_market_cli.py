"""`lmdock-market serve` as a real process: listens, answers health checks, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def test_serve_health_and_graceful_stop(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmdock.server.cli",
            "serve",
            "--data-dir",
            str(tmp_path / "m"),
            "--listen",
            "127.0.0.1:0",
            "--grace",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        address = json.loads(line)["listening"]
        assert address.startswith("127.0.0.1:")
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert (tmp_path / "m" / "profile.json").is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_reports_a_bad_profile_file_clearly(tmp_path: Path) -> None:
    data = tmp_path / "m"
    data.mkdir()
    (data / "profile.json").write_text('{"kernel": "cubic"}')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmdock.server.cli",
            "serve",
            "--data-dir",
            str(data),
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "lmdock-market: error:" in proc.stderr
