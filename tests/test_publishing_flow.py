"""Publishing end to end on a real market (gRPC on port 0) with tiny models built from configs:
build -> package -> sign -> publish -> search -> pull -> run, tampering, DP builds, wrong bases."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest
from lmdock.client import cli
from lmdock.client.connection import MarketClient
from lmdock.client.publish.package import package_build, package_learnware, verify_package
from lmdock.common.card import Card
from lmdock.common.errors import IntegrityError, InvalidArgument
from lmdock.common.package import TaskInfo
from lmdock.common.package_reader import sign_package
from lmdock.common.signing import generate_key
from lmdock.lab.embedded import embedded_market

from tests.helpers import cluster_spec, make_adapter, make_package, wait_for

POSITIVE = ("good", "great", "fine", "nice", "happy")
NEGATIVE = ("bad", "awful", "poor", "sad", "ugly")
CARD = """id = "toy-sentiment"
name = "Toy sentiment"
domain = "reviews"
licence = "MIT"
publisher = "acme"
description = "Says whether three words are positive or negative."
tags = ["sentiment", "toy"]
"""


def write_task(path: Path, n: int, *, field: str = "label", seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(n):
            words = POSITIVE if i % 2 else NEGATIVE
            text = " ".join(rng.choice(words) for _ in range(3))
            fh.write(json.dumps({"text": text, field: "positive" if i % 2 else "negative"}) + "\n")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def retar(src: Path, dst: Path, change: dict[str, bytes]) -> Path:
    """Copy a package tar with some members' bytes replaced (what an attacker on the way does)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin:
            data = change.get(member.name, tin.extractfile(member).read())
            member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
    return dst


@pytest.fixture(scope="module")
def build_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One classification build shared by the tests here (training is the slow part)."""
    root = tmp_path_factory.mktemp("build")
    data = write_task(root / "train.jsonl", 60)
    out = root / "build"
    code = cli.main(
        [
            *("build", "--base", str(tiny_bert), "--data", str(data), "--out", str(out)),
            *("--epochs", "2", "--max-tokens", "16", "--learning-rate", "5e-3", "--json"),
        ]
    )
    assert code == 0
    return out


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def signed_package(build_dir: Path, out: Path, profile) -> Path:
    card = Card(id="toy-sentiment", name="toy-sentiment", domain="reviews", licence="MIT", publisher="acme")
    package_build(build_dir, out, profile=profile, card=card)
    sign_package(out, generate_key())
    return out


@pytest.mark.slow
def test_build_package_sign_publish_search_pull_run(
    build_dir: Path, home: Path, tiny_bert: Path, tmp_path: Path, profile, capsys
) -> None:
    build = json.loads((build_dir / "build.json").read_text())
    assert sorted(p.name for p in build_dir.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "build.json",
    ]
    assert build["task"] == {"kind": "classification", "labels": ["negative", "positive"]}
    assert build["data"]["train_records"] == 54 and build["data"]["eval_records"] == 6
    assert set(build["eval_scores"]) == {"accuracy", "base_zero_shot_accuracy", "majority_accuracy"}
    assert build["training"]["dp"] is False

    key = cli_json(capsys, "keys", "gen")
    assert Path(key["path"]) == home / "keys" / "publisher.key"
    code, _, err = run_cli(capsys, "keys", "gen")
    assert code == 1 and "already exists" in err  # a key is never overwritten silently

    (tmp_path / "card.toml").write_text(CARD)
    package = tmp_path / "toy.tar"
    decoy = make_adapter(tiny_bert, tmp_path / "decoy")
    with embedded_market(tmp_path / "market", profile=profile) as (address, _market):
        with MarketClient(address) as client:  # another learnware, far from this task
            make_package(
                tmp_path / "decoy.tar",
                decoy,
                key=generate_key(),
                spec=cluster_spec(profile, 7),
                base_model=str(tiny_bert),
                learnware_id="decoy-learnware",
                publisher="other",
            )
            client.upload(tmp_path / "decoy.tar")
        packaged = cli_json(
            capsys,
            "package",
            str(build_dir),
            "--market",
            address,
            "--card",
            str(tmp_path / "card.toml"),
            "--out",
            str(package),
        )
        assert packaged["signed"] is False and packaged["spec"] == {"dp": False}
        assert packaged["eval_scores"] == build["eval_scores"]

        code, _, err = run_cli(capsys, "publish", str(package), "--market", address)
        assert code == 2 and "not signed" in err

        assert cli_json(capsys, "sign", str(package))["key_id"] == key["key_id"]
        verified = cli_json(capsys, "verify", str(package), "--trusted-key", key["public_key"])
        assert verified["id"] == "toy-sentiment" and verified["training"] == {"dp": False}
        assert verified["eval_scores"] == build["eval_scores"]

        published = cli_json(capsys, "publish", str(package), "--market", address)
        assert published["uploaded"] is True and published["dp_trained"] is False
        again = cli_json(capsys, "publish", str(package), "--market", address)
        assert again["uploaded"] is False  # re-running publish is safe

        search = cli_json(
            capsys, "search", "--market", address, "--data", str(build["data"]["path"]), "--epsilon", "2"
        )
        assert search["matches"][0]["learnware_id"] == "toy-sentiment"
        listed = {item["id"]: item for item in cli_json(capsys, "list", "--market", address)}
        assert listed["toy-sentiment"]["dp_trained"] is False
        assert (
            cli_json(capsys, "pull", "--market", address, "toy-sentiment")["learnware_id"] == "toy-sentiment"
        )

    ran = cli_json(capsys, "run", "toy-sentiment", "--data", str(build["data"]["path"]), "--device", "cpu")
    assert ran["metric"] == "accuracy" and 0.0 <= ran["score"] <= 1.0
    assert set(ran["predictions"]) <= {"negative", "positive"}
    card = (home / "learnwares" / "toy-sentiment" / "README.md").read_text()
    assert "licence: MIT" in card and "WITHOUT differential privacy" in card and "accuracy" in card


@pytest.mark.slow
def test_tampered_packages_are_refused_by_client_and_market(
    build_dir: Path, tmp_path: Path, profile, capsys
) -> None:
    package = signed_package(build_dir, tmp_path / "toy.tar", profile)
    with tarfile.open(package) as tar:
        weights = bytearray(tar.extractfile("adapter_model.safetensors").read())
        manifest = json.loads(tar.extractfile("manifest.json").read())
    weights[-1] ^= 0x01
    manifest["licence"] = "proprietary"
    bad_weights = retar(package, tmp_path / "w.tar", {"adapter_model.safetensors": bytes(weights)})
    bad_manifest = retar(package, tmp_path / "m.tar", {"manifest.json": json.dumps(manifest).encode()})
    for bad, reason in ((bad_weights, "sha256"), (bad_manifest, "signature")):
        code, _, err = run_cli(capsys, "verify", str(bad))
        assert code == 7 and reason in err
    with pytest.raises(IntegrityError, match="sha256"):
        sign_package(bad_weights, generate_key())  # signing checks the bytes against the manifest first
    with embedded_market(tmp_path / "market", profile=profile) as (address, _market):
        code, _, err = run_cli(capsys, "publish", str(bad_weights), "--market", address)
        assert code == 7 and "sha256" in err  # refused before a byte is sent
        with MarketClient(address) as client:
            for bad in (bad_weights, bad_manifest):
                with pytest.raises(IntegrityError):
                    client.upload(bad)  # the market checks too, for clients that do not
            assert client.list() == []
        assert [p for p in (tmp_path / "market" / "blobs").rglob("*") if p.is_file()] == []

        # a package altered in the market's storage after publication is refused at pull
        published = cli_json(capsys, "publish", str(package), "--market", address)
        blob = (
            tmp_path / "market" / "blobs" / published["package_sha256"][:2] / published["package_sha256"][2:]
        )
        altered = bytearray(blob.read_bytes())
        altered[len(altered) // 2] ^= 0x01
        blob.write_bytes(bytes(altered))
        cache = tmp_path / "cache"
        code, _, err = run_cli(capsys, "pull", "--market", address, "toy-sentiment", "--cache", str(cache))
        assert code == 7 and "sha256" in err
        assert not (cache / "learnwares" / "toy-sentiment").exists()


@pytest.mark.slow
def test_an_interrupted_upload_leaves_nothing_and_can_be_retried(
    build_dir: Path, tmp_path: Path, profile, capsys
) -> None:
    import grpc
    from lmdock.client.connection import open_channel
    from lmdock.common.hashing import sha256_file
    from lmdock.v1 import market_pb2 as pb
    from lmdock.v1 import market_pb2_grpc as pb_grpc

    package = signed_package(build_dir, tmp_path / "toy.tar", profile)
    data = package.read_bytes()

    def dropped_connection():
        yield pb.UploadRequest(header=pb.UploadHeader(sha256=sha256_file(package), size=len(data)))
        yield pb.UploadRequest(chunk=data[: len(data) // 2])
        raise ConnectionError("network went away")

    with embedded_market(tmp_path / "market", profile=profile) as (address, _market):
        with open_channel(address) as channel, pytest.raises(grpc.RpcError):
            pb_grpc.MarketServiceStub(channel).Upload(dropped_connection(), timeout=30)
        with MarketClient(address) as client:
            assert client.list() == []
        # the caller learns of the failure before the market's handler, cancelled, cleans up
        wait_for(lambda: [p for p in (tmp_path / "market" / "blobs").rglob("*") if p.is_file()] == [])
        assert cli_json(capsys, "publish", str(package), "--market", address)["uploaded"] is True


@pytest.mark.slow
def test_dp_build_is_recorded_verified_and_listed(
    tiny_llama: Path, home: Path, tmp_path: Path, profile, capsys
):
    data = write_task(tmp_path / "qa.jsonl", 80, field="answer")
    built = cli_json(
        capsys,
        "build",
        "--base",
        str(tiny_llama),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "b"),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-tokens",
        "16",
        "--dp-epsilon",
        "4",
        "--dp-delta",
        "1e-6",
        "--budget-epsilon",
        "8",
    )
    assert built["task"] == "generation"
    assert built["privacy"]["dp"] is True and 0 < built["privacy"]["epsilon"] <= 4.0 * 1.01
    assert built["privacy"]["delta"] == 1e-6
    assert built["training"]["dp_sgd"]["accountant"] == "pld" and built["training"]["dp_sgd"]["steps"] > 0
    assert built["training"]["dp_sgd"]["neighbouring"] == "replace-one"
    assert set(built["eval_scores"]) == {"exact_match", "base_exact_match"}
    assert "trained with DP-SGD: epsilon=" in (tmp_path / "b" / "README.md").read_text()
    held_out = built["records"]["eval_records"]
    assert built["training"]["eval_scores"]["held_out_records"] == held_out == 8

    cli_json(capsys, "keys", "gen")
    package = tmp_path / "qa.tar"
    with embedded_market(tmp_path / "market", profile=profile) as (address, _market):
        packaged = cli_json(
            capsys,
            "package",
            str(tmp_path / "b"),
            "--market",
            address,
            "--id",
            "toy-qa",
            "--domain",
            "qa",
            "--licence",
            "MIT",
            "--publisher",
            "acme",
            "--out",
            str(package),
            "--spec-epsilon",
            "1",
            "--budget-epsilon",
            "8",
        )
        assert packaged["spec"]["dp"] is True and packaged["spec"]["epsilon"] == 1.0
        assert packaged["training"] == built["privacy"]
        cli_json(capsys, "sign", str(package))
        verified = cli_json(capsys, "verify", str(package))
        assert verified["training"] == built["privacy"] and verified["spec_dp"] is True
        # what leaves in the manifest: noised scores (never a raw fraction j / 8), and how
        manifest = verify_package(package)[0]
        assert dict(manifest.eval_scores) == built["eval_scores"]
        assert manifest.training["eval_scores"]["dp"] is True
        for value in manifest.eval_scores.values():
            assert min(abs(value * held_out - j) for j in range(held_out + 1)) > 1e-9, value
        code, out, _ = run_cli(capsys, "verify", str(package))
        assert (
            code == 0 and "trained with DP-SGD" in out and "exact_match" in out and "(DP: noised, sd" in out
        )
        assert cli_json(capsys, "publish", str(package), "--market", address)["dp_trained"] is True
        code, out, _ = run_cli(capsys, "list", "--market", address)
        assert code == 0 and f"eps={built['privacy']['epsilon']:.3g}" in out


@pytest.mark.slow
def test_a_wrong_base_model_is_refused_clearly(
    build_dir: Path, tiny_bert: Path, tiny_llama: Path, tmp_path: Path, profile, capsys
) -> None:
    # the build names its base; packaging it as another base is refused
    code, _, err = run_cli(
        capsys,
        "package",
        str(build_dir),
        "--market",
        "127.0.0.1:1",
        "--id",
        "x-y-z",
        "--domain",
        "d",
        "--licence",
        "MIT",
        "--publisher",
        "p",
        "--base",
        str(tiny_llama),
    )
    assert code == 2 and "built on base model" in err
    card = Card(id="toy-sentiment", name="toy-sentiment", domain="reviews", licence="MIT", publisher="acme")
    with pytest.raises(InvalidArgument, match="built on base model"):
        package_build(build_dir, tmp_path / "p.tar", profile=profile, card=card, base_model=str(tiny_llama))
    # an adapter folder whose config names another base than the manifest would
    with pytest.raises(InvalidArgument, match="was built for base model"):
        package_learnware(
            build_dir,
            tmp_path / "p.tar",
            profile=profile,
            spec_texts=["good"] * 30,
            key=generate_key(),
            card=Card(id="x-y-z", name="x", domain="d", licence="MIT", publisher="p"),
            base_model=str(tiny_llama),
            task=TaskInfo("classification", ("negative", "positive")),
        )
    # a package written around those checks is refused by `verify`, `publish` and the market
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    bad = tmp_path / "bad.tar"
    make_package(bad, adapter, key=generate_key(), spec=cluster_spec(profile, 1), base_model=str(tiny_llama))
    code, _, err = run_cli(capsys, "verify", str(bad))
    assert code == 2 and "was built for base model" in err
    with (
        embedded_market(tmp_path / "market", profile=profile) as (address, _market),
        MarketClient(address) as client,
        pytest.raises(InvalidArgument, match="base model"),
    ):
        client.upload(bad)
    # a base model that is not on this machine
    data = write_task(tmp_path / "t.jsonl", 30)
    code, _, err = run_cli(
        capsys,
        "build",
        "--base",
        str(tmp_path / "no-such-model"),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 1 and "not available locally" in err
    assert not (tmp_path / "b").exists()
