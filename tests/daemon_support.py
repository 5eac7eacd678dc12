"""Helpers for the daemon tests: real packages on tiny models, a config file, plain-HTTP calls."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from lmdock.client.connection import MarketClient
from lmdock.client.daemon.app import RunningDaemon
from lmdock.client.daemon.config import load_config
from lmdock.client.daemon.core import Daemon
from lmdock.client.spec_release import public_spec
from lmdock.common.signing import generate_key
from lmdock.lab.refdata import DATA_DIR

from tests.helpers import make_adapter, make_package

TRIAGE = "clinic-triage"  # a classifier on tiny BERT, specified by medical questions
WRITER = "notes-writer"  # a generator on tiny Llama, specified by financial news

PINNED_TASKS = f"""
[[tasks]]
name = "triage"
learnware = "{TRIAGE}"

[[tasks]]
name = "notes"
learnware = "{WRITER}"
"""


def lab_texts(name: str, n: int, *, skip: int = 0) -> list[str]:
    lines = (DATA_DIR / f"{name}.jsonl").read_text().splitlines()[skip : skip + n]
    return [json.loads(line)["text"] for line in lines]


@pytest.fixture(scope="module")
def packages(
    tiny_bert: Path, tiny_llama: Path, profile: Any, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    out = tmp_path_factory.mktemp("packages")
    key = generate_key()
    triage = out / "triage.tar"
    make_package(
        triage,
        make_adapter(tiny_bert, out / "triage-adapter"),
        key=key,
        spec=public_spec(lab_texts("medquad", 40), profile),
        learnware_id=TRIAGE,
        base_model=str(tiny_bert),
        domain="medical",
    )
    writer = out / "writer.tar"
    make_package(
        writer,
        make_adapter(tiny_llama, out / "writer-adapter", kind="generation"),
        key=key,
        spec=public_spec(lab_texts("tfns", 40), profile),
        learnware_id=WRITER,
        base_model=str(tiny_llama),
        kind="generation",
        domain="finance",
    )
    return [triage, writer]


def publish(address: str, packages: list[Path]) -> None:
    with MarketClient(address) as client:
        for package in packages:
            client.upload(package)


def write_config(
    folder: Path,
    *,
    market: str,
    market_extra: str = "",
    runtime_extra: str = "",
    daemon_extra: str = "",
    extra: str = "",
    budget_epsilon: float = 8.0,
    batch_wait_ms: float = 2,
    max_new_tokens: int = 16,
) -> Path:
    """A daemon config for tests: everything under `folder`, APIs on free loopback ports.

    `market_extra`, `runtime_extra` and `daemon_extra` go into their tables; `extra` after [api]
    (more [api] keys, [[tasks]]).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lmdock.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "state"
log_level = "debug"
{daemon_extra}

[market]
address = "{market}"
timeout_s = 10
attempts = 2
backoff_s = 0.05
{market_extra}

[cache]
dir = "cache"
max_bytes = "64MiB"

[privacy]
epsilon = 2.0
budget_epsilon = {budget_epsilon}
min_records = 20

[runtime]
device = "cpu"
dtype = "float32"
batch_wait_ms = {batch_wait_ms}
max_new_tokens = {max_new_tokens}
{runtime_extra}

[api]
http = "127.0.0.1:0"
grpc = "127.0.0.1:0"
{extra}
"""
    )
    return path


@contextmanager
def running(config_path: Path) -> Iterator[Daemon]:
    """A daemon started in this process from `config_path`, stopped cleanly afterwards."""
    daemon = RunningDaemon(load_config(config_path))
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def token_of(daemon: Daemon) -> str:
    return daemon.config.token_file.read_text().strip()


def http(
    daemon: Daemon, method: str, path: str, body: Any = None, *, token: str | None = ""
) -> tuple[int, Any]:
    """(status, parsed JSON) of a plain-HTTP call; `token=""` uses the daemon's, None sends none."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{daemon.http_address}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token or token_of(daemon)}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    text = raw.decode()
    return status, (json.loads(text) if text.startswith("{") else text)


def wait_ready(daemon: Daemon, timeout: float = 60.0) -> None:
    """Wait for the config's tasks (prepared in the background at start) to be ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {t.name: t.state for t in daemon.tasks()}
        if states and all(s in ("ready", "failed") for s in states.values()):
            assert set(states.values()) == {"ready"}, daemon.tasks()
            return
        time.sleep(0.1)
    raise AssertionError(f"tasks not ready in {timeout}s: {daemon.tasks()}")
