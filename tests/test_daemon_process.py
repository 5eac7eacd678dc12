"""`lmdock daemon` as a real process: starts, answers, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lmdock.client import cli
from lmdock.client.daemon.config import load_config
from lmdock.client.daemon.runfile import RUNFILE

from tests.daemon_support import write_config


def test_daemon_process_serves_and_stops_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, market="")
    config = load_config(config_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "lmdock.client.cli", "daemon", "--config", str(config_path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        runfile = config.state_dir / RUNFILE
        while not runfile.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the daemon did not start in time"
            time.sleep(0.2)
        capsys.readouterr()
        assert cli.main(["status", "--config", str(config_path), "--json"]) == 0
        state = json.loads(capsys.readouterr().out)
        assert state["running"] and state["pid"] == process.pid and state["tasks"] == []
        assert config.token_file.stat().st_mode & 0o077 == 0  # the token is for its owner only
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    ready = json.loads(out)
    assert ready["pid"] == process.pid and ready["http"].startswith("http://127.0.0.1:")
    assert "daemon ready" in err and "stopped" in err  # the log, on standard error
    assert not runfile.exists()
