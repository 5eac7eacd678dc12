"""A task being prepared can be stopped: removed, left by its caller (Ctrl-C), or the daemon
stopped by SIGTERM; embedding stops within a batch, nothing is released, the daemon exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lmdock.client.daemon.config import TaskSettings, load_config
from lmdock.client.daemon.local_client import LocalClient
from lmdock.client.daemon.runfile import RUNFILE
from lmdock.client.ledger import Ledger
from lmdock.common.errors import Cancelled
from lmdock.lab.embedded import embedded_market

from tests.daemon_support import lab_texts, packages, publish, running, token_of, write_config

__all__ = ["packages"]  # the fixture, imported for pytest

RECORDS = 4000  # minutes of embedding on a small CPU: every test stops it after a batch or two


def _big_task(folder: Path) -> Path:
    texts = lab_texts("medquad", 1000)
    path = folder / "big.jsonl"
    path.write_text("".join(json.dumps({"text": f"{texts[i % 1000]} ({i})"}) + "\n" for i in range(RECORDS)))
    return path


def _wait(condition, what: str, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_removing_or_leaving_a_task_being_prepared_stops_its_embedding(
    packages: list[Path], tmp_path: Path, profile
) -> None:
    data = _big_task(tmp_path)
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        publish(address, packages)
        config = write_config(tmp_path, market=address)
        with running(config) as daemon:
            outcome: list[BaseException] = []

            def add() -> None:
                try:
                    daemon.add_task(TaskSettings(name="big", data=str(data)))
                except BaseException as exc:
                    outcome.append(exc)

            worker = threading.Thread(target=add)
            worker.start()
            _wait(
                lambda: daemon.registry.all() and daemon.registry.all()[0].stage == "embedding", "embedding"
            )
            removed = daemon.remove_task("big")  # cancels, waits for it to stop, removes
            worker.join(timeout=60)
            assert removed.name == "big" and daemon.tasks() == []
            assert list((daemon.config.state_dir / "embedding").iterdir()) == []  # none kept once removed
            assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)

            # a caller that leaves (Ctrl-C on `lmdock task add`) cancels what it asked for
            embedded: list[int] = []

            def leave_after_a_batch(stage: str, done: int, total: int) -> None:
                if stage == "embedding" and done > 0:
                    embedded.append(done)
                    raise KeyboardInterrupt

            with (
                pytest.raises(KeyboardInterrupt),
                LocalClient(daemon.grpc_address, token_of(daemon)) as client,
            ):
                client.add_task(TaskSettings(name="big", data=str(data)), progress=leave_after_a_batch)
            _wait(lambda: not daemon._preparing, "the preparation to stop", timeout=60)
            assert daemon.tasks() == [] and embedded[0] < RECORDS
            assert Ledger(daemon.config.ledger_path).state().releases == ()  # nothing was released


def test_sigterm_while_embedding_exits_0_and_the_task_starts_over_next_time(
    packages: list[Path], tmp_path: Path, profile
) -> None:
    data = _big_task(tmp_path)
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        publish(address, packages)
        task = f'[[tasks]]\nname = "big"\ndata = "{data}"\n'
        config_path = write_config(tmp_path, market=address, extra=task)
        config = load_config(config_path)
        process = subprocess.Popen(
            [sys.executable, "-m", "lmdock.client.cli", "daemon", "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            registry = config.state_dir / "tasks.json"

            def stage() -> str:
                try:
                    return json.loads(registry.read_text())["tasks"][0]["stage"]
                except (OSError, ValueError, LookupError):
                    return ""

            _wait(lambda: (config.state_dir / RUNFILE).exists() and stage() == "embedding", "embedding")
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, err
        assert "terminate called" not in err and "preparation cancelled" in err
        (record,) = json.loads(registry.read_text())["tasks"]
        assert record["state"] == "registered"  # prepared again at the next start
        assert Ledger(config.ledger_path).state().releases == ()
        kept = config.state_dir / "embedding" / "big.json"  # what was embedded, to resume from
        assert kept.exists() and kept.stat().st_mode & 0o077 == 0
