"""The daemon's HTTP API refuses hostile requests precisely and keeps serving everyone else.

One real daemon (uvicorn on port 0, a real market, the tiny BERT classifier and Llama
generator) logging to a real daemon.log: prompts past the model's positions, a poisoned request
in a batch, a burst past the in-flight cap, deep JSON, lying Content-Lengths, big bodies, wrong
media types and tokens in the query string.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lmdock.client.daemon.app import configure_logging
from lmdock.client.daemon.config import load_config
from lmdock.client.daemon.core import Daemon
from lmdock.lab.embedded import embedded_market

from tests.daemon_support import (
    PINNED_TASKS,
    http,
    lab_texts,
    packages,
    publish,
    running,
    token_of,
    wait_ready,
    write_config,
)

__all__ = ["packages"]  # the fixture, imported for pytest

MAX_IN_FLIGHT = 8
BATCH = 4  # texts per batch; a batch waits up to 1 s to fill, so concurrent requests share one
LIMITS = f"""max_request_bytes = "64KiB"
max_concurrent = {MAX_IN_FLIGHT}
{PINNED_TASKS}"""


@dataclass
class Served:
    daemon: Daemon
    log: Path

    def raw(self, request: bytes) -> bytes:
        """The server's bytes for `request` sent as is, up to the end of the first answer's headers."""
        host, port = self.daemon.http_address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        return answer

    def logged(self, *lines: str) -> str:
        """daemon.log, once it holds `lines` (an access line is written just after its answer)."""
        deadline = time.monotonic() + 30
        while not all(line in (text := self.log.read_text()) for line in lines):
            assert time.monotonic() < deadline, f"{lines} not in daemon.log:\n{text}"
            time.sleep(0.05)
        return text

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"http://{self.daemon.http_address}/v1/completions", data=body, method="POST"
        )
        for name, value in {"Authorization": f"Bearer {token_of(self.daemon)}", **headers}.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def served(packages: list[Path], tmp_path_factory: pytest.TempPathFactory, profile) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("daemon-http")
    log = folder / "daemon.log"
    loggers = [logging.getLogger(name) for name in ("lmdock", "uvicorn")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    with embedded_market(folder / "market", profile=profile) as (address, _):
        publish(address, packages)
        config = write_config(
            folder,
            market=address,
            daemon_extra=f'log_file = "{log}"',
            runtime_extra=f"max_batch_size = {BATCH}",
            batch_wait_ms=1000,
            extra=LIMITS,
        )
        configure_logging(load_config(config))  # as `lmdock daemon` does: lines go to daemon.log
        try:
            with running(config) as daemon:
                wait_ready(daemon)
                yield Served(daemon, log)
        finally:
            for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
                for handler in logger.handlers:
                    handler.close()
                logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_a_prompt_longer_than_the_model_reads_is_cut(served: Served) -> None:
    words = " ".join(lab_texts("medquad", 400)).split()[:3000]
    long = " ".join(words)
    assert len(long.split()) == 3000
    status, answer = http(served.daemon, "POST", "/v1/completions", {"model": "triage", "prompt": long})
    assert status == 200, answer
    assert answer["usage"]["prompt_tokens"] == 512  # tiny BERT's positions, below runtime.max_input_tokens
    body = {"model": "notes", "prompt": long, "max_tokens": 16}
    status, answer = http(served.daemon, "POST", "/v1/completions", body)
    assert status == 200, answer
    assert answer["usage"]["prompt_tokens"] == 256 - 16  # tiny Llama's positions, room left for 16 new


def test_a_long_prompt_batched_with_short_ones_fails_none_of_them(served: Served) -> None:
    long = " ".join(" ".join(lab_texts("medquad", 400)).split()[:3000])
    prompts = ["fever and rash", long, "knee pain", "blurred vision"]
    start = threading.Barrier(len(prompts))

    def ask(prompt: str) -> tuple[int, Any]:
        start.wait()  # all at once, within one batch window
        return http(served.daemon, "POST", "/v1/completions", {"model": "triage", "prompt": prompt})

    def batches() -> int:
        return sum(base.batches_run for base in served.daemon.pool.describe())

    before = batches()
    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(ask, prompts))
    assert batches() == before + 1  # one batch held all four
    assert [status for status, _ in answers] == [200] * len(prompts), answers
    assert answers[1][1]["usage"]["prompt_tokens"] == 512  # cut to the model's positions
    assert all(answer["choices"][0]["label"] for _, answer in answers)


def test_a_poisoned_request_fails_alone_in_its_batch(served: Served) -> None:
    prompts = ["fever and rash", "knee pain", "\ud800 unpaired surrogate", "blurred vision"]
    start = threading.Barrier(len(prompts))

    def ask(prompt: str) -> tuple[int, Any]:
        start.wait()
        return http(served.daemon, "POST", "/v1/completions", {"model": "triage", "prompt": prompt})

    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(ask, prompts))
    for i, (status, answer) in enumerate(answers):
        if i == 2:
            assert status == 400 and "unpaired surrogate" in answer["error"]["message"]
        else:
            assert status == 200 and answer["choices"][0]["label"], answer
    assert served.logged(f"a batch of {BATCH} requests failed (InvalidArgument)")


def test_a_burst_past_the_cap_gets_429_with_retry_after_never_a_reset(served: Served) -> None:
    body = json.dumps({"model": "triage", "prompt": "How is asthma treated ?"}).encode()
    json_type = {"Content-Type": "application/json"}
    start = threading.Barrier(64)

    def ask(_: int) -> tuple[int, dict[str, Any], str | None]:
        start.wait()
        request = urllib.request.Request(f"http://{served.daemon.http_address}/v1/completions", data=body)
        request.add_header("Authorization", f"Bearer {token_of(served.daemon)}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read()), None
        except urllib.error.HTTPError as exc:  # any other error (a reset) fails the test
            return exc.code, json.loads(exc.read()), exc.headers["Retry-After"]

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(ask, range(64)))
    assert {status for status, _, _ in answers} <= {200, 429}
    assert any(status == 200 for status, _, _ in answers)
    for status, answer, retry_after in answers:
        if status == 429:
            assert retry_after == "1" and answer["error"]["type"] == "rate_limit_error"

    # Hold every slot with a request whose body is late: the next request is refused at once.
    host, port = served.daemon.http_address.rsplit(":", 1)
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token_of(served.daemon)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    late = [socket.create_connection((host, int(port)), timeout=30) for _ in range(MAX_IN_FLIGHT)]
    try:
        for sock in late:
            sock.sendall(head)
        # the server admits them in the order they came, so the first probe is normally refused
        probes = [http(served.daemon, "GET", "/v1/models") for _ in range(20)]
        refused = next(answer for status, answer in probes if status == 429)
        assert "api.max_concurrent" in refused["error"]["message"]
        for sock in late:  # the late bodies arrive: each is answered
            sock.sendall(body)
        for sock in late:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in late:
            sock.close()
    assert served.post(body, json_type)[0] == 200


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "nests deeper than 32 levels"),  # past Python's recursion
        (b'{"model": "triage", "prompt": ' + b'{"a": ' * 33 + b"1" + b"}" * 33 + b"}", "deeper than 32"),
        (b'{"model": "triage", "prompt": "x"', "not valid JSON"),
        (b'{"max_tokens": ' + b"9" * 5000 + b"}", "not valid JSON"),  # past int's 4300 digits
        (b"\xff\xfe{}", "not valid JSON"),
        (b'["model", "triage"]', "must be a JSON object"),
    ],
)
def test_bad_json_is_a_400(served: Served, body: bytes, message: str) -> None:
    status, answer = served.post(body, JSON)
    assert status == 400 and message in answer["error"]["message"]
    assert answer["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("length", ["12abc", "\u00b2", "\u0661\u0662", "-1", "2, 3"])
def test_a_bad_content_length_is_a_400(served: Served, length: str) -> None:
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token_of(served.daemon)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{}}"
    )
    assert served.raw(request.encode("utf-8")).startswith(b"HTTP/1.1 400 ")


def test_two_content_lengths_that_disagree_are_a_400(served: Served) -> None:
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token_of(served.daemon)}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x"
    )
    assert served.raw(request.encode()).startswith(b"HTTP/1.1 400 ")


def test_a_body_over_the_limit_is_a_413(served: Served) -> None:
    big = json.dumps({"model": "triage", "prompt": "x" * 70_000}).encode()
    status, answer = served.post(big, JSON)
    assert status == 413 and "api.max_request_bytes" in answer["error"]["message"]
    # without a Content-Length (chunked), the bytes are counted as they come
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token_of(served.daemon)}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    assert served.raw(request + chunked).startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_a_415(served: Served, content_type: str | None) -> None:
    body = json.dumps({"model": "triage", "prompt": "x"}).encode()
    status, answer = served.post(body, {"Content-Type": content_type} if content_type else {})
    assert status == 415 and "application/json" in answer["error"]["message"]


def test_a_token_in_the_query_string_is_ignored_and_never_logged(served: Served) -> None:
    token = token_of(served.daemon)
    status, answer = http(served.daemon, "GET", f"/v1/models?api_key={token}", token=None)
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    status, _ = http(served.daemon, "GET", f"/v1/models?token={token}&secret=query-secret")
    assert status == 200
    status, _ = http(served.daemon, "GET", "/v1/nowhere?secret=query-secret")
    assert status == 404
    logged = served.logged("GET /v1/models model=- -> 401", "GET /v1/nowhere model=- -> 404")
    assert token not in logged and "query-secret" not in logged and "api_key" not in logged
    assert "fever and rash" not in logged and "asthma" not in logged  # prompts of the tests above


def test_paths_and_model_names_cannot_forge_log_lines(served: Served) -> None:
    status, _ = http(served.daemon, "GET", "/v1/models/a%0A2026-01-01%20INFO%20forged-path")
    assert status == 404
    forged = {"model": "b\n2026-01-01 INFO forged-model", "prompt": "x"}
    assert http(served.daemon, "POST", "/v1/completions", forged)[0] == 404
    logged = served.logged("GET /v1/models/a%0A2026", "POST /v1/completions model=(not a task name) -> 404")
    assert not [line for line in logged.splitlines() if line.startswith("2026-01-01")]
