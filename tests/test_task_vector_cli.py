"""The task-vector spec on the command line (issue 22): `lmdock package --task-vector` carries the
publisher's exact vector; `lmdock search --spec task-vector | both` sends DP ones, booked in the
ledger, and fuses the two rankings. Real market over gRPC, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmdock.client import cli
from lmdock.client.connection import MarketClient
from lmdock.client.training.task_vector import task_vector_profile
from lmdock.client.training.task_vector_search import RRF_K
from lmdock.common.package_reader import sign_package
from lmdock.common.signing import generate_key
from lmdock.server.auth import AccessPolicy

from tests.market_helpers import running_market

KEY = generate_key()
TOPICS = {
    "clinic": "the patient reports {} days of fever, cough and pain in the chest; blood pressure is {}",
    "markets": "shares of the bank rose {} percent after earnings; the bond yield fell to {}",
}


def write_texts(path: Path, topic: str, n: int, offset: int = 0) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            label = "positive" if i % 2 else "negative"
            fh.write(json.dumps({"text": TOPICS[topic].format(i + offset, 3 * i + 7), "label": label}) + "\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def build_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("build")
    data = write_texts(root / "clinic.jsonl", "clinic", 40)
    out = root / "build"
    argv = ["build", "--base", str(tiny_bert), "--data", str(data), "--out", str(out), "--epochs", "1"]
    assert cli.main([*argv, "--max-tokens", "16", "--json"]) == 0
    return out


def test_package_with_a_task_vector_then_search_by_it_and_by_both(
    tmp_path: Path, build_dir: Path, tiny_llama: Path, profile, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    vectors = task_vector_profile(
        str(tiny_llama), layers=1, rank=2, max_tokens=24, steps=2, learning_rate=1.0, clip_norm=0.5
    )
    profile_file = tmp_path / "tv.json"
    profile_file.write_text(json.dumps({**vectors.to_dict(), "profile_id": vectors.profile_id}))
    with (
        running_market(
            tmp_path / "market",
            profile,
            access=AccessPolicy.open_demo(),
            allow_local_base_models=True,
            task_vector_profiles=(vectors,),
        ) as running,
        MarketClient(running.address) as client,
    ):
        card = ["--domain", "d", "--licence", "MIT", "--publisher", "acme"]
        packaged = []
        for topic, source in (
            ("clinic", ["--task-vector"]),
            ("markets", ["--task-vector-profile", str(profile_file)]),
        ):
            data = write_texts(tmp_path / f"{topic}.jsonl", topic, 40)
            out = tmp_path / f"{topic}.tar"
            code, stdout, err = run(
                capsys, "package", str(build_dir), "--market", running.address, "--id", topic, *card,
                "--data", str(data), "--out", str(out), *source, "--json",
            )  # fmt: skip
            assert code == 0, err
            described = json.loads(stdout)["task_vector"]
            assert described["profile"]["profile_id"] == vectors.profile_id
            assert described["privacy"]["epsilon"] is None and described["privacy"]["sigma"] == 0.0
            sign_package(out, KEY)  # an open market trusts a publisher's first key: one key
            packaged.append(client.upload(out).card.id)
        assert len(running.market.index.of(vectors.profile_id)) == 2

        user = write_texts(tmp_path / "user.jsonl", "clinic", 50, offset=500)
        search = ["search", "--market", running.address, "--data", str(user), "--budget-epsilon", "4"]
        code, stdout, err = run(capsys, *search, "--epsilon", "1", "--spec", "task-vector", "--json")
        assert code == 0, err
        report = json.loads(stdout)
        ranking = report["rankings"]["task-vector"]
        assert {m["learnware_id"] for m in ranking["matches"]} == set(packaged) and "fused" not in report
        assert ranking["privacy"]["sigma"] > 0 and ranking["privacy"]["unit"] == "record"
        assert 0.999 <= ranking["privacy"]["epsilon"] <= 1.0
        assert report["ledger"]["spent"]["epsilon"] == pytest.approx(ranking["privacy"]["epsilon"], abs=1e-6)

        code, stdout, err = run(capsys, *search, "--epsilon", "2", "--spec", "both", "--json")
        assert code == 0, err
        report = json.loads(stdout)
        assert set(report["rankings"]) == {"kernel-mean", "task-vector"}
        assert report["rankings"]["kernel-mean"]["privacy"]["epsilon"] == 1.0  # half of 2
        assert 0.999 <= report["rankings"]["task-vector"]["privacy"]["epsilon"] <= 1.0
        assert "split in half" in report["budget_split"]
        fused = report["fused"]
        assert {m["learnware_id"] for m in fused} == set(packaged)
        for m in fused:  # listed by both rankings: the sum of the two reciprocal ranks
            ranks = m["ranks"]
            assert (
                m["score"] == pytest.approx(sum(1 / (RRF_K + r) for r in ranks.values())) and len(ranks) == 2
            )
        assert report["ledger"]["spent"]["epsilon"] <= 3.0 + 1e-6  # 1 before, then 2: composed

        code, stdout, err = run(capsys, *search, "--epsilon", "0.5", "--spec", "both")
        assert code == 0, err
        assert "task-vector ranking" in stdout and "fused ranking" in stdout and "split in half" in stdout
        booked = len(json.loads(run(capsys, "ledger", "show", "--json")[1])["entries"])
        assert booked == 5  # one task vector, then two releases for each search by both
        code, _, err = run(capsys, *search, "--epsilon", "8", "--spec", "both")
        assert code == 5 and "budget" in err  # checked whole, before either release: nothing booked
        assert len(json.loads(run(capsys, "ledger", "show", "--json")[1])["entries"]) == booked
