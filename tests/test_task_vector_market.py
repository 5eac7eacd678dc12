"""Task vectors on the market (issue 22): served beside the kernel-mean profiles, checked on
upload, stored in the catalogue, one index per task-vector profile, searched by cosine; through
real gRPC, real SQLite and PostgreSQL, real packages on a tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmdock.client.connection import MarketClient
from lmdock.client.ledger import Ledger
from lmdock.client.privacy_unit import DataSet
from lmdock.client.training.task_vector import compute_task_vector, release_task_vector, task_vector_profile
from lmdock.common.accounting import Budget
from lmdock.common.errors import AlreadyExists
from lmdock.common.exit_codes import USAGE
from lmdock.common.signing import generate_key
from lmdock.common.spec import EXACT, Spec
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.server.auth import AccessPolicy
from lmdock.server.cli import main as market_main
from lmdock.server.config import add_task_vector_profile, load_task_vector_profiles
from lmdock.server.identity import Identity, Role
from lmdock.server.market import Market
from lmdock.server.task_vector_profiles import task_vector_profile_on

from tests.helpers import cluster_spec, make_adapter, make_package, task_vector_package
from tests.market_helpers import running_market

RECIPE = {"layers": 1, "rank": 2, "max_tokens": 24, "steps": 2, "learning_rate": 1.0, "clip_norm": 0.5}
TOPICS = {
    "clinic": "the patient reports {} days of fever, cough and pain in the chest; blood pressure is {}",
    "markets": "shares of the bank rose {} percent after earnings; the bond yield fell to {}",
    "arithmetic": "if a box holds {} apples and we add {} more, how many apples are in the box",
}
KEY = generate_key()


def texts(topic: str, n: int, offset: int = 0) -> list[str]:
    return [TOPICS[topic].format(i + offset, 3 * i + offset + 7) for i in range(n)]


@pytest.fixture(scope="module")
def vector_profile(tiny_llama: Path) -> TaskVectorProfile:
    return task_vector_profile(str(tiny_llama), **RECIPE)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, vector_profile, profile) -> dict:
    """One package per topic with its exact task vector, and one without any."""
    folder = tmp_path_factory.mktemp("packages")
    adapter = make_adapter(tiny_llama, folder / "adapter", kind="generation")
    out = {}
    for i, topic in enumerate(TOPICS):
        out[topic] = folder / f"{topic}.tar"
        task_vector_package(
            out[topic],
            adapter,
            key=KEY,
            spec=cluster_spec(profile, seed=i),
            vector_profile=vector_profile,
            values=compute_task_vector(texts(topic, 16), vector_profile).values,
            learnware_id=topic,
            base_model=str(tiny_llama),
        )
    out["plain"] = folder / "plain.tar"
    make_package(
        out["plain"],
        adapter,
        key=KEY,
        spec=cluster_spec(profile, seed=9),
        kind="generation",
        learnware_id="plain",
        base_model=str(tiny_llama),
    )
    return out


def query(topic: str, profile: TaskVectorProfile) -> Spec:
    """A user's exact task vector of fresh texts of `topic` (other numbers)."""
    return Spec(profile.profile_id, compute_task_vector(texts(topic, 10, offset=100), profile).values, EXACT)


def ranked(client: MarketClient, spec: Spec) -> list[str]:
    return [m.learnware_id for m in client.search(spec, top_k=10).matches]


@pytest.fixture(scope="module")
def deeper_llama(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """tiny_llama's shape with as many layers as the default recipe adapts, and its tokenizer."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("deeper-llama")
    config = LlamaConfig.from_pretrained(tiny_llama)
    config.num_hidden_layers = TaskVectorProfile.layers
    LlamaForCausalLM(config).save_pretrained(folder)
    for f in tiny_llama.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy(f, folder / f.name)
    return folder


def test_the_markets_profile_is_the_clients(tiny_llama: Path, deeper_llama: Path, vector_profile) -> None:
    """The market states dim from a weightless skeleton; the client's recipe trains exactly it."""
    assert task_vector_profile_on(str(tiny_llama), tiny_llama, **RECIPE) == vector_profile
    assert task_vector_profile_on(str(deeper_llama), deeper_llama) == task_vector_profile(str(deeper_llama))


def test_task_vectors_are_served_indexed_searched_and_unpublished(
    tmp_path: Path, db_url: str, profile, vector_profile, packages: dict
) -> None:
    data_dir = tmp_path / "market"
    served = dict(
        db_url=db_url,
        access=AccessPolicy.open_demo(),
        allow_local_base_models=True,
        task_vector_profiles=(vector_profile,),
    )
    with running_market(data_dir, profile, **served) as running, MarketClient(running.address) as client:
        assert client.task_vector_profiles() == [vector_profile]
        assert client.task_vector_profile() == vector_profile
        for package in packages.values():
            client.upload(package)
        for topic in TOPICS:  # each topic's fresh texts find its learnware first, by cosine
            found = ranked(client, query(topic, vector_profile))
            assert found[0] == topic and sorted(found) == sorted(TOPICS)  # "plain" has no task vector
        assert len(ranked(client, cluster_spec(profile, seed=0))) == 4  # kernel means: all four
        # a consumer's DP task vector is accepted and ranks the same three
        ledger = Ledger(tmp_path / "ledger.jsonl", budget=Budget(epsilon=3.0, delta=1e-6))
        records = texts("clinic", 20, offset=200)
        private, _ = release_task_vector(
            records,
            vector_profile,
            ledger=ledger,
            dataset=DataSet.of(records, name="notes"),
            epsilon=1.0,
            delta=1e-6,
        )
        assert private.privacy.sigma > 0 and sorted(ranked(client, private)) == sorted(TOPICS)
        # another market process on the same catalogue streams the task vectors at its start
        # (into the approximate backend: an index per task-vector profile, persisted by its id)
        other = Market.open(
            data_dir,
            profile=profile,
            db_url=db_url,
            task_vector_profiles=(vector_profile,),
            change_poll_s=60,
            index="hnsw",
        )
        try:
            assert other.search(query("markets", vector_profile)).matches[0].learnware_id == "markets"
            running.market.unpublish(Identity("ops", Role.ADMIN, "api-key"), "markets")
            other.follower.catch_up()  # the change log carries the removal to its task-vector index
            for market in (running.market, other):
                result = market.search(query("markets", vector_profile), top_k=10)
                assert "markets" not in [m.learnware_id for m in result.matches]
                assert len(result.matches) == 2
        finally:
            other.close()
        # the catalogue keeps the vector, not the listing
        assert running.market.catalogue.get("clinic").task_vector is None
        stored = running.market.catalogue.get("clinic", with_task_vector=True).task_vector
        assert stored is not None and stored.profile_id == vector_profile.profile_id
    # a market started later on the same catalogue without the profile ranks no task vector
    with running_market(data_dir, profile, db_url=db_url, access=AccessPolicy.open_demo()) as running:
        assert len(running.market.index) == 3  # the kernel means of clinic, arithmetic, plain


def test_add_profile_persists_a_task_vector_profile(
    tmp_path: Path, deeper_llama: Path, tiny_llama: Path, vector_profile, capsys
) -> None:
    data_dir = tmp_path / "market"
    add = ["add-profile", "--data-dir", str(data_dir), "--kind", "task-vector", "--base"]
    assert market_main([*add, str(deeper_llama)]) == 0
    added = json.loads(capsys.readouterr().out)
    (default,) = load_task_vector_profiles(data_dir)
    assert added["added"] == default.profile_id and default == task_vector_profile(str(deeper_llama))
    assert market_main([*add, str(tiny_llama)]) == USAGE  # 2 layers: the default recipe adapts more
    assert "cannot adapt the top" in capsys.readouterr().err
    profile_file = tmp_path / "tv.json"
    profile_file.write_text(json.dumps({**vector_profile.to_dict(), "profile_id": vector_profile.profile_id}))
    assert market_main(["add-profile", "--data-dir", str(data_dir), "--file", str(profile_file)]) == 0
    assert load_task_vector_profiles(data_dir) == (default, vector_profile)
    assert json.loads(capsys.readouterr().out)["task_vector_newest_first"] == [
        vector_profile.profile_id,
        default.profile_id,
    ]
    with pytest.raises(AlreadyExists):
        add_task_vector_profile(data_dir, vector_profile)
    assert market_main(["add-profile", "--data-dir", str(data_dir), "--kind", "task-vector"]) != 0
    assert "needs --base" in capsys.readouterr().err
