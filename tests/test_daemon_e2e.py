"""The daemon end to end, against a real market on port 0, called with plain HTTP.

add task -> DP spec -> search -> pull -> answers through the OpenAI-compatible API; the
market goes away and answers continue; a damaged cache file is downloaded again, never loaded.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch
from lmdock.client import cli
from lmdock.common.hashing import sha256_file
from lmdock.lab.embedded import embedded_market
from safetensors.torch import load_file, save_file

from tests.daemon_support import (
    TRIAGE,
    WRITER,
    http,
    lab_texts,
    packages,
    publish,
    running,
    token_of,
    write_config,
)

__all__ = ["packages"]  # the fixture, imported for pytest

TASK_RECORDS = 100
PROMPTS = ["What are the symptoms of glaucoma ?", "How is asthma treated ?", "Who is at risk for gout ?"]


def _task_files(folder: Path) -> tuple[Path, Path]:
    """A JSONL task of medical questions and a CSV task of financial news (text in 'sentence').

    100 records each: at the daemon's epsilon = 2 a 40-record medical task matched the finance
    learnware in 0.8 % of releases (2,000 simulated), 100 records leave no measurable chance."""
    medical = folder / "questions.jsonl"
    medical.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in lab_texts("medquad", TASK_RECORDS, skip=500))
    )
    finance = folder / "news.csv"
    with finance.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "sentence"])
        writer.writerows([i, t] for i, t in enumerate(lab_texts("tfns", TASK_RECORDS, skip=500)))
    return medical, finance


def _add(config: Path, name: str, data: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert (
        cli.main(["task", "add", name, "--data", str(data), "--config", str(config), "--json", *extra]) == 0
    )
    return json.loads(capsys.readouterr().out)


def test_add_search_pull_answer_then_market_down(
    packages: list[Path],
    tmp_path: Path,
    profile,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    medical, finance = _task_files(tmp_path)
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        publish(address, packages)
        config = write_config(tmp_path, market=address)
        with running(config) as daemon, caplog.at_level(logging.DEBUG):
            triage = _add(config, "triage", medical, capsys=capsys)
            notes = _add(config, "notes", finance, "--text-column", "sentence", capsys=capsys)
            assert (triage["state"], triage["learnware_id"], triage["kind"]) == (
                "ready",
                TRIAGE,
                "classification",
            )
            assert (notes["state"], notes["learnware_id"], notes["kind"]) == ("ready", WRITER, "generation")
            assert triage["epsilon_spent"] == 2.0 and triage["records"] == TASK_RECORDS
            assert 0 < triage["bytes_sent"] < 4096  # the spec and a few small requests: no texts

            status, models = http(daemon, "GET", "/v1/models")
            assert status == 200 and {m["id"] for m in models["data"]} == {"triage", "notes"}

            with caplog.at_level(logging.DEBUG, logger="lmdock"):  # request lines are debug too
                status, answer = http(
                    daemon, "POST", "/v1/completions", {"model": "triage", "prompt": PROMPTS}
                )
                assert status == 200, answer
                scores = _scores(answer)
                assert answer["object"] == "text_completion" and answer["lmdock"]["learnware_id"] == TRIAGE
                for choice in answer["choices"]:
                    assert (
                        choice["text"] == choice["label"] == max(choice["scores"], key=choice["scores"].get)
                    )
                    assert sum(choice["scores"].values()) == pytest.approx(1.0, abs=1e-5)

                chat = {
                    "model": "notes",
                    "messages": [{"role": "user", "content": "Shares of ACME rose"}],
                    "max_tokens": 5,
                }
                status, reply = http(daemon, "POST", "/v1/chat/completions", chat)
                assert status == 200, reply
                assert (
                    reply["object"] == "chat.completion"
                    and reply["choices"][0]["message"]["role"] == "assistant"
                )
                assert isinstance(reply["choices"][0]["message"]["content"], str)
                assert 1 <= reply["usage"]["completion_tokens"] <= 5
            logged = caplog.text  # everything from task add to answers, at debug level
            assert "released a spec: epsilon=2 delta=1e-06" in logged and "task triage: spec sent" in logged
            assert "POST /v1/completions model=triage -> 200" in logged
            private = [
                *PROMPTS,
                "ACME",
                *lab_texts("medquad", TASK_RECORDS, skip=500),
                *lab_texts("tfns", TASK_RECORDS, skip=500),
            ]
            assert [t for t in private if t[:40] in logged] == []

            capsys.readouterr()
            assert cli.main(["status", "--config", str(config), "--json"]) == 0
            state = json.loads(capsys.readouterr().out)
            assert state["running"] and [t["state"] for t in state["tasks"]] == ["ready", "ready"]
            assert sorted(b["learnwares"] for b in state["loaded"]) == [[TRIAGE], [WRITER]]

    # The market is gone. A restarted daemon serves from the verified cache alone.
    with running(config) as daemon:
        status, answer = http(daemon, "POST", "/v1/completions", {"model": "triage", "prompt": PROMPTS})
        assert status == 200, answer
        assert _scores(answer) == pytest.approx(scores)
        status, reply = http(
            daemon, "POST", "/v1/completions", {"model": "notes", "prompt": "Markets fell", "max_tokens": 3}
        )
        assert status == 200 and reply["choices"][0]["finish_reason"] in ("stop", "length")


def _scores(answer: dict) -> list[float]:
    return [score for choice in answer["choices"] for _, score in sorted(choice["scores"].items())]


def test_a_damaged_cache_file_is_downloaded_again_never_loaded(
    packages: list[Path], tmp_path: Path, profile
) -> None:
    request = {"model": "triage", "prompt": PROMPTS}
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        publish(address, packages)
        config = write_config(tmp_path, market=address)
        with running(config) as daemon:
            from lmdock.client.daemon.config import TaskSettings

            daemon.add_task(TaskSettings(name="triage", learnware=TRIAGE))  # pinned: no search
            status, genuine = http(daemon, "POST", "/v1/completions", request)
            assert status == 200
            weights = daemon.cache.folder(TRIAGE) / "adapter_model.safetensors"
            good_sha = sha256_file(weights)
        # Damage the cached weights while the daemon is down, keeping a loadable file: had it
        # been loaded, the scores would change.
        tensors = load_file(weights)
        save_file({k: v + 1 if v.dtype == torch.float32 else v for k, v in tensors.items()}, weights)
        assert sha256_file(weights) != good_sha
        with running(config) as daemon:
            status, answer = http(daemon, "POST", "/v1/completions", request)
            assert status == 200, answer
            assert _scores(answer) == pytest.approx(_scores(genuine))
            assert sha256_file(weights) == good_sha
            assert daemon.status().repairs == 1


def test_the_apis_need_the_bearer_token(packages: list[Path], tmp_path: Path) -> None:
    config = write_config(tmp_path, market="")
    with running(config) as daemon:
        assert http(daemon, "GET", "/v1/models", token=None)[0] == 401
        status, body = http(daemon, "GET", "/v1/models", token="not-the-token-but-long-enough")
        assert status == 401 and body["error"]["type"] == "authentication_error"
        status, body = http(daemon, "POST", "/v1/completions", {"model": "nope", "prompt": "hi"})
        assert status == 404 and body["error"]["code"] == "model_not_found"
        status, body = http(daemon, "POST", "/v1/completions", {"model": "nope"})
        assert status == 400 and "prompt" in body["error"]["message"]
        assert token_of(daemon)
        from lmdock.client.daemon.local_client import LocalClient
        from lmdock.common.errors import Unauthenticated

        with (
            LocalClient(daemon.grpc_address, "wrong-token-wrong-token") as client,
            pytest.raises(Unauthenticated),
        ):
            client.tasks()
        with LocalClient(daemon.grpc_address, token_of(daemon)) as client:
            assert client.tasks() == []


def test_one_connection_serves_many_requests_refused_or_not(tmp_path: Path) -> None:
    import http.client

    config = write_config(tmp_path, market="")
    with running(config) as daemon:
        host, port = daemon.http_address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        auth = {"Authorization": f"Bearer {token_of(daemon)}"}
        for _ in range(3):  # keep-alive
            connection.request("GET", "/v1/models", headers=auth)
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["data"] == []
        # a refused request's unread body does not confuse the next one on the same connection
        connection.request("POST", "/v1/completions", body=b'{"model": "m", "prompt": "x"}')
        response = connection.getresponse()
        assert response.status == 401
        response.read()
        connection.request("GET", "/v1/models", headers=auth)
        assert connection.getresponse().status == 200
        connection.close()


def test_an_exhausted_budget_sends_nothing(
    packages: list[Path], tmp_path: Path, profile, capsys: pytest.CaptureFixture[str]
) -> None:
    medical, _ = _task_files(tmp_path)
    with embedded_market(tmp_path / "market", profile=profile) as (address, _):
        publish(address, packages)
        config = write_config(tmp_path, market=address, budget_epsilon=3.0)  # one search of 2 fits
        with running(config) as daemon:
            first = _add(config, "triage", medical, capsys=capsys)
            # the composed epsilon at the budget's delta (1e-6): at most the release's own 2
            assert first["state"] == "ready" and 0 < first["budget_spent"] <= 2.0
            assert first["budget_delta"] == daemon.config.privacy.budget_delta  # the total's delta
            assert list((daemon.config.state_dir / "embedding").iterdir()) == []  # released: vectors gone
            assert cli.main(["task", "show", "triage", "--config", str(config)]) == 0
            shown = capsys.readouterr().out
            assert "this data set has spent epsilon=" in shown and "(delta=1e-06) in all" in shown
            assert f"market ranking (best first): {first['matches'][0][0]}" in shown  # no 0-1 score
            ledger = daemon.preparer.ledger
            assert len(ledger.state().releases) == 1

            # another release of the same records would exceed the cap: refused, nothing sent
            args = [
                "task",
                "add",
                "again",
                "--data",
                str(medical),
                "--epsilon",
                "4",
                "--config",
                str(config),
            ]
            assert cli.main(args) == 5  # the budget's own exit code
            assert "budget" in capsys.readouterr().err.lower()
            assert "again" not in {t.name for t in daemon.tasks()}  # a refused add leaves nothing
            assert len(ledger.state().releases) == 1

            # the same release again is re-sent from the ledger at no further cost
            same = _add(config, "same", medical, capsys=capsys)
            assert same["state"] == "ready" and same["learnware_id"] == first["learnware_id"]
            assert len(ledger.state().releases) == 1 and same["budget_spent"] == first["budget_spent"]
