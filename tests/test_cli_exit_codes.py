"""The command lines as scripts see them: one exit code per kind of failure, JSON errors under
--json, readable words for a market that cannot be reached, quiet broken pipes (real processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lmdock.common import exit_codes
from lmdock.common.errors import BudgetExceeded, IntegrityError, InvalidArgument, NotFound, Unavailable
from lmdock.server.identity import Role

from tests.market_helpers import running_market


def lmdock(
    *args: str, env: dict[str, str] | None = None, module: str = "lmdock.client.cli"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _dead_address() -> str:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_each_kind_of_error_has_its_own_code_listed_in_the_help() -> None:
    codes = {
        InvalidArgument("x"): 2,
        Unavailable("x"): 3,
        BudgetExceeded("x"): 5,
        NotFound("x"): 6,
        IntegrityError("x"): 7,
    }
    assert {exit_codes.exit_code(e) for e in codes} == set(codes.values())
    assert all(exit_codes.exit_code(e) == code for e, code in codes.items())
    shown = lmdock("--help").stdout
    for code in (*codes.values(), 4, 130, 141):
        assert f"\n  {code:<4} " in shown
    assert lmdock("--help", module="lmdock.server.cli").stdout.count("exit codes:") == 1
    version = lmdock("--version")
    assert version.returncode == 0 and version.stdout.startswith("lmdock ")


def test_usage_and_unreachable_differ_and_json_errors_are_json(tmp_path: Path) -> None:
    usage = lmdock("list", "--json")
    assert usage.returncode == 2
    error = json.loads(usage.stdout)["error"]
    assert error["kind"] == "usage" and "--market" in error["message"]

    dead = _dead_address()
    down = lmdock("list", "--market", dead, "--json")
    assert down.returncode == 3
    error = json.loads(down.stdout)["error"]
    assert error == {"kind": "unreachable", "exit_code": 3, "message": error["message"]}
    assert f"cannot reach {dead}: connection refused; is the market running" in error["message"]
    assert "Traceback" not in down.stderr and "ipv4:" not in down.stderr  # no raw gRPC wording

    from_env = lmdock("list", env={"LMDOCK_MARKET": dead})  # $LMDOCK_MARKET stands for --market
    assert from_env.returncode == 3 and dead in from_env.stderr

    url = lmdock("list", "--market", "http://market.example:50051")
    assert url.returncode == 2
    assert "without a scheme: give 'market.example:50051'" in url.stderr
    assert "refusing to send an API key" not in url.stderr

    keyed = lmdock("list", "--market", "nosuch.invalid:50051", env={"LMDOCK_API_KEY": "k"})
    assert keyed.returncode == 3 and "its host name does not resolve" in keyed.stderr

    task = tmp_path / "t.jsonl"
    task.write_text('{"text": "a"}\n')
    missing = lmdock("run", "nosuch", "--data", str(task), "--cache", str(tmp_path / "cache"), "--json")
    assert missing.returncode == 6 and json.loads(missing.stdout)["error"]["kind"] == "not_found"


def test_an_api_key_with_its_newline_works_and_a_wrong_one_is_an_auth_error(tmp_path: Path, profile) -> None:
    with running_market(tmp_path / "market", profile) as market:
        _, key = market.market.api_keys.create("hospital", Role.CONSUMER)
        listed = lmdock("list", "--market", market.address, env={"LMDOCK_API_KEY": key + "\n"})
        assert listed.returncode == 0, listed.stderr
        assert "Illegal header" not in listed.stderr
        refused = lmdock("list", "--market", market.address, env={"LMDOCK_API_KEY": "lmk_wrong\n"})
        assert refused.returncode == 4, refused.stderr
        control = lmdock("list", "--market", market.address, env={"LMDOCK_API_KEY": "a\x01b"})
        assert control.returncode == 2 and "characters a header cannot carry" in control.stderr


def test_a_reader_that_leaves_the_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    config = tmp_path / "lmdock.toml"
    config.write_text('[market]\naddress = ""\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "lmdock.client.cli", "daemon", "--check", "--json", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as `| head` does once it has read enough
    err = process.stderr.read()
    assert process.wait(timeout=120) == exit_codes.BROKEN_PIPE, err
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.parametrize("argv", [["task", "list"], ["status"]])
def test_no_daemon_is_unreachable(tmp_path: Path, argv: list[str]) -> None:
    config = tmp_path / "lmdock.toml"
    config.write_text('[market]\naddress = ""\n')
    done = lmdock(*argv, "--config", str(config))
    assert done.returncode == 3 and "the lmdock daemon is not running" in done.stderr
