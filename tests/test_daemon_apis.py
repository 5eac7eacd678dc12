"""The daemon's APIs beyond the happy path: config tasks, local gRPC, streaming, task commands."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from lmdock.client import cli
from lmdock.client.answers import Classification, GenerationOptions
from lmdock.client.daemon.app import RunningDaemon
from lmdock.client.daemon.config import load_config
from lmdock.client.daemon.core import Daemon
from lmdock.client.daemon.local_client import LocalClient
from lmdock.client.daemon.types import ChatMessage
from lmdock.common.errors import FailedPrecondition, InvalidArgument, NotFound
from lmdock.lab.embedded import embedded_market

from tests.daemon_support import (
    PINNED_TASKS,
    TRIAGE,
    WRITER,
    http,
    packages,
    publish,
    running,
    token_of,
    wait_ready,
    write_config,
)

__all__ = ["packages"]  # the fixture, imported for pytest


def test_config_tasks_grpc_streaming_and_task_commands(
    packages: list[Path], tmp_path: Path, profile, capsys: pytest.CaptureFixture[str]
) -> None:
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        publish(address, packages)
        config = write_config(tmp_path, market=address, extra=PINNED_TASKS)
        with running(config) as daemon:
            wait_ready(daemon)  # config tasks are prepared in the background at start
            with LocalClient(daemon.grpc_address, token_of(daemon)) as client:
                assert {m.name for m in client.models()} == {"triage", "notes"}
                answer = client.complete("triage", ["fever and rash", "knee pain"], GenerationOptions())
                assert answer.learnware_id == TRIAGE and len(answer.choices) == 2
                assert all(isinstance(c, Classification) for c in answer.choices)
                reply = client.chat(
                    "notes", [ChatMessage("user", "Stocks rallied")], GenerationOptions(max_new_tokens=4)
                )
                assert reply.kind == "generation" and reply.completion_tokens <= 4
                with pytest.raises(NotFound, match="no task named 'nope'"):
                    client.complete("nope", ["x"], GenerationOptions())
                with pytest.raises(InvalidArgument, match="max_tokens is 17; it must be between 1 and 16"):
                    client.complete("notes", ["x"], GenerationOptions(max_new_tokens=17))
                status = client.status()
                assert status.pid > 0 and status.cached_learnwares == 2 and len(status.loaded) == 2

            streamed = _sse(
                daemon,
                "/v1/chat/completions",
                {
                    "model": "notes",
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 3,
                    "stream": True,
                },
            )
            assert streamed[-1] == "[DONE]"
            chunks = [json.loads(c) for c in streamed[:-1]]
            assert (
                chunks[0]["object"] == "chat.completion.chunk"
                and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            )
            assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

            for _ in range(daemon.config.api.max_concurrent):  # as if that many requests were running
                daemon._in_flight.acquire()
            status, body = http(daemon, "POST", "/v1/completions", {"model": "triage", "prompt": "x"})
            assert status == 429 and "api.max_concurrent" in body["error"]["message"]
            for _ in range(daemon.config.api.max_concurrent):
                daemon._in_flight.release()

            capsys.readouterr()
            assert cli.main(["task", "list", "--config", str(config)]) == 0
            listing = capsys.readouterr().out
            assert "triage" in listing and TRIAGE in listing and "ready" in listing
            assert cli.main(["task", "show", "triage", "--config", str(config)]) == 0
            assert 'apps call it as model "triage"' in capsys.readouterr().out
            assert cli.main(["status", "--config", str(config)]) == 0
            shown = capsys.readouterr().out
            assert "lmdock daemon running" in shown and "base model in memory" in shown
            assert cli.main(["task", "remove", "notes", "--config", str(config), "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["name"] == "notes"
            status, models = http(daemon, "GET", "/v1/models")
            assert [m["id"] for m in models["data"]] == ["triage"]
            assert cli.main(["task", "add", "triage", "--learnware", TRIAGE, "--config", str(config)]) == 1
            assert "task 'triage' exists (ready)" in capsys.readouterr().err
            assert cli.main(["task", "retry", "triage", "--config", str(config)]) == 1
            assert "is ready; to search again, add it with --replace" in capsys.readouterr().err


def _sse(daemon: Daemon, path: str, body: dict) -> list[str]:
    import urllib.request

    request = urllib.request.Request(
        f"http://{daemon.http_address}{path}", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Authorization", f"Bearer {token_of(daemon)}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        text = response.read().decode()
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line]


def test_a_task_fails_clearly_when_the_market_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    config = write_config(tmp_path, market=dead)
    with running(config) as daemon:
        capsys.readouterr()
        assert cli.main(["task", "add", "t1", "--learnware", TRIAGE, "--config", str(config)]) == 3
        err = capsys.readouterr().err
        assert f"market: cannot reach {dead}: connection refused" in err
        assert "daemon" not in err  # the daemon answered: the market is what is down
        assert daemon.tasks() == []  # a failed add leaves nothing behind
        status, body = http(daemon, "POST", "/v1/completions", {"model": "t1", "prompt": "x"})
        assert status == 404 and "no task named 't1'" in body["error"]["message"]


def test_a_failed_task_add_leaves_nothing_and_the_corrected_one_is_taken(
    packages: list[Path], tmp_path: Path, profile, capsys: pytest.CaptureFixture[str]
) -> None:
    few = tmp_path / "few.txt"
    few.write_text("one\ntwo\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    not_json = tmp_path / "bad.jsonl"
    not_json.write_text("{not json\n")
    mistakes = {
        tmp_path / "nosuch.jsonl": "nosuch.jsonl",
        empty: "empty",
        not_json: "bad.jsonl:1",
        few: "has 2 records; a private search needs at least 20",
    }
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        config = write_config(tmp_path, market=address)
        with running(config) as daemon:
            texts = tmp_path / "texts.txt"
            texts.write_text("\n".join(f"question {i} about a fever" for i in range(30)) + "\n")
            capsys.readouterr()
            # an empty market is refused before anything is embedded or spent
            assert cli.main(["task", "add", "t", "--data", str(texts), "--config", str(config)]) == 1
            assert "has no learnwares yet" in capsys.readouterr().err
            assert daemon.preparer.ledger.state().releases == ()
            for data, said in mistakes.items():
                assert cli.main(["task", "add", "t", "--data", str(data), "--config", str(config)]) == 2
                assert said in capsys.readouterr().err
                assert daemon.tasks() == []
            publish(address, packages)
            assert cli.main(["task", "add", "t", "--learnware", TRIAGE, "--config", str(config)]) == 0
            assert [t.state for t in daemon.tasks()] == ["ready"]


def test_commands_say_when_no_daemon_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, market="")
    assert cli.main(["daemon", "--check", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["api"]["http"] == "127.0.0.1:0"
    assert cli.main(["status", "--config", str(config), "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["running"] is False
    assert cli.main(["task", "list", "--config", str(config)]) == 3
    assert f"start it with `lmdock daemon --config {config}`" in capsys.readouterr().err
    with running(config):
        second = RunningDaemon(load_config(config))
        with pytest.raises(FailedPrecondition, match="a daemon is already running"):
            second.start()


def test_a_revoked_signing_key_is_refused_when_online(packages: list[Path], tmp_path: Path, profile) -> None:
    with embedded_market(tmp_path / "market", profile=profile) as (address, market):
        publish(address, packages)
        config = write_config(tmp_path, market=address, extra=PINNED_TASKS)
        with running(config) as daemon:
            wait_ready(daemon)
        (key,) = market.signing_keys.list("tester")  # the open market pinned the first upload's key
        market.signing_keys.revoke(key.publisher, key.key_id)
        with running(config) as daemon:  # at start, ready tasks are checked against revocations
            deadline = time.monotonic() + 60
            while {t.state for t in daemon.tasks()} != {"failed"}:
                assert time.monotonic() < deadline, daemon.tasks()
                time.sleep(0.1)
            assert all("revoked the key that signed" in t.error for t in daemon.tasks())
            assert not daemon.cache.has(TRIAGE) and not daemon.cache.has(WRITER)
            status, body = http(daemon, "POST", "/v1/completions", {"model": "triage", "prompt": "x"})
            assert status == 503 and "revoked" in body["error"]["message"]
