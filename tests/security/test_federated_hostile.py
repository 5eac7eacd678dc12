"""A federation's hostile parties: a server that replays, skips or re-plans rounds, asks for more
trust or more counts than a site gives, or sends malformed settings; a site that sends tensors
that are not the adapter's. Each is refused with a precise message, before anything is trained,
booked or aggregated."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import fitins_to_recorddict
from flwr.supercore.task_identity import TaskIdentity
from lmdock.client.ledger import Ledger
from lmdock.common.accounting import Budget
from lmdock.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from lmdock.federated.build import AdapterFedAvg
from lmdock.federated.build_site import BuildSettings, destination, train_round
from lmdock.federated.evaluate_site import evaluate_candidates, evaluation_request
from lmdock.federated.search_site import contribute, search_config
from lmdock.federated.site import Site

from tests.test_publishing_flow import write_task

SETTINGS = BuildSettings(
    federation="f" * 32,
    base_model="unused",
    labels=("negative", "positive"),
    rounds=2,
    local_epochs=1,
    epsilon=2.0,
    delta=1e-6,
    batch_size=16,
)


@pytest.fixture()
def site(tmp_path: Path) -> Site:
    return Site(
        name="north",
        data=write_task(tmp_path / "north.jsonl", 40),
        ledger_path=tmp_path / "north" / "ledger.jsonl",
        dataset="notes",
        budget=Budget(epsilon=3.0, delta=1e-6),
    )


def _context(site: Site, **extra: object) -> Context:
    return Context(
        run_id=1, node_id=7, node_config={**site.node_config(), **extra}, state=RecordDict(), run_config={}
    )


def _message(content: RecordDict, kind: str = "train") -> Message:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    return Message(content, 7, kind)


def _train(settings: BuildSettings, server_round: int) -> Message:
    config = ConfigRecord({**settings.to_config(), "server-round": server_round})
    return _message(RecordDict({"arrays": ArrayRecord([np.zeros(1)]), "config": config}))


def test_a_site_refuses_rounds_out_of_order_before_booking_anything(site: Site) -> None:
    context = _context(site)
    with pytest.raises(FailedPrecondition, match="rounds come once each, in order"):
        train_round(_train(SETTINGS, 2), context)  # round 2 before round 1
    with pytest.raises(FailedPrecondition, match="rounds come once each"):
        train_round(_train(SETTINGS, 3), context)  # past the booked rounds
    assert Ledger(site.ledger_path).state().releases == ()


def test_a_site_trains_round_one_of_a_federation_once(site: Site) -> None:
    data = site.read()
    ledger, dataset = site.ledger(data)
    plan = SETTINGS.plan(len(data.texts))
    ledger.record(dataset, plan.release(), kind="training", destination=destination(SETTINGS, site))
    with pytest.raises(FailedPrecondition, match="already trained round 1"):
        train_round(_train(SETTINGS, 1), _context(site))  # a replay, even after a restart
    assert len(Ledger(site.ledger_path).state().releases) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rounds": 0}, "rounds and local epochs"),
        ({"rounds": "many"}, "malformed"),
        ({"epsilon": math.inf}, "epsilon"),
        ({"labels": "negative,positive"}, "labels must be a list"),
        ({"labels": ["only"]}, "at least 2 labels"),
    ],
)
def test_a_site_refuses_malformed_settings(site: Site, change: dict, message: str) -> None:
    config = ConfigRecord({**SETTINGS.to_config(), **change, "server-round": 1})
    content = RecordDict({"arrays": ArrayRecord([np.zeros(1)]), "config": config})
    with pytest.raises(InvalidArgument, match=message):
        train_round(_message(content), _context(site))
    assert Ledger(site.ledger_path).state().releases == ()


def test_a_site_refuses_labels_outside_the_federation(site: Site) -> None:
    settings = BuildSettings(**{**SETTINGS.__dict__, "labels": ("positive", "neutral")})
    with pytest.raises(InvalidArgument, match="outside the federation's label set"):
        train_round(_train(settings, 1), _context(site))


def test_a_site_refuses_to_rely_on_more_sites_than_it_trusts(site: Site, profile) -> None:
    config = search_config("f" * 32, profile, epsilon=1.0, delta=1e-6, shares=3, sites=4)
    content = fitins_to_recorddict(FitIns(ndarrays_to_parameters([np.zeros(1)]), config), keep_input=True)
    with pytest.raises(PermissionDenied, match="trusts 2 sites"):
        contribute(_message(content), _context(site))
    assert Ledger(site.ledger_path).state().releases == ()


@pytest.mark.parametrize("candidates", [[], ["a"] * 2, [f"lw-{i}" for i in range(21)]])
def test_a_site_refuses_an_evaluation_of_too_many_or_repeated_learnwares(site: Site, candidates) -> None:
    content = evaluation_request("f" * 32, "127.0.0.1:1", candidates, epsilon=1.0, delta=1e-6)
    with pytest.raises(InvalidArgument, match="distinct learnwares"):
        evaluate_candidates(_message(content, "evaluate"), _context(site))
    assert Ledger(site.ledger_path).state().releases == ()


def _reply(arrays: dict, records: object) -> Message:
    metrics = {
        "num-examples": records,
        "epsilon": 1.0,
        "delta": 1e-6,
        "noise-multiplier": 1.0,
        "sample-rate": 0.5,
        "steps": 4,
    }
    content = RecordDict(
        {"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics), "site": ConfigRecord({"site": "x"})}
    )
    return Message(content, reply_to=_message(RecordDict()))


@pytest.mark.parametrize(
    ("arrays", "records", "why"),
    [
        ({"w": torch.zeros(2, 3), "extra": torch.zeros(1)}, 10, "not the adapter's"),
        ({"w": torch.zeros(3, 2)}, 10, "not the adapter's"),
        ({"w": torch.full((2, 3), math.nan)}, 10, "not the adapter's"),
        ({"w": torch.zeros(2, 3)}, 0, "record count"),
        ({"w": torch.zeros(2, 3)}, 10**9, "record count"),
        ({"w": torch.zeros(2, 3)}, 2.5, "record count"),
    ],
)
def test_the_server_aggregates_only_the_adapters_tensors(arrays, records, why: str) -> None:
    strategy = AdapterFedAvg({"w": torch.zeros(2, 3)}, nodes=1)
    good = _reply({"w": torch.ones(2, 3)}, 10)
    bad = _reply(arrays, records)
    aggregated, _ = strategy.aggregate_train(1, [bad])
    assert aggregated is None and why in next(iter(strategy.refused.values()))
    strategy = AdapterFedAvg({"w": torch.zeros(2, 3)}, nodes=1)
    aggregated, _ = strategy.aggregate_train(1, [good])
    assert aggregated is not None and torch.equal(aggregated.to_torch_state_dict()["w"], torch.ones(2, 3))
