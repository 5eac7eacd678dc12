"""`lmdock federate search`: four sites' noisy kernel sums through Flower's SecAgg+, one of them
dropping out after the key exchange; the joint spec equals the count-weighted mean of the
contributing sites' kernel means up to the stated noise, and one ordinary Search finds the
learnware of that data."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from lmdock.client.connection import MarketClient
from lmdock.client.ledger import Ledger
from lmdock.client.publish.training import PROBE_TRAINING, train_adapter
from lmdock.client.spec_release import features_of
from lmdock.common.accounting import Budget
from lmdock.common.errors import InvalidArgument
from lmdock.common.mechanism import sum_tv
from lmdock.common.package import TaskInfo
from lmdock.common.signing import generate_key
from lmdock.common.spec import Spec, exact_spec
from lmdock.federated.apps import client as site_client
from lmdock.federated.apps import search_client, server
from lmdock.federated.evaluate import evaluate_run_config
from lmdock.federated.local_grid import run_local
from lmdock.federated.search import search_run_config
from lmdock.federated.secure_spec import plan_secure_spec
from lmdock.federated.site import Site
from lmdock.server.auth import AccessPolicy

from tests.helpers import cluster_spec, make_adapter, make_package
from tests.market_helpers import running_market
from tests.test_dp_training import toy_task
from tests.test_publishing_flow import write_task

SITES = ("north", "south", "east", "west")
PROBE = TaskInfo(kind="classification", labels=("negative", "positive"), pooling="mean")


def _good_adapter(base: Path, out: Path) -> Path:
    """A learnware that answers the sites' task well (a linear probe, trained without DP)."""
    texts, labels = toy_task(120, seed=3)
    config = replace(PROBE_TRAINING, learning_rate=0.5, batch_size=16, max_tokens=16)
    train_adapter(base_model=str(base), task=PROBE, texts=texts, targets=labels, out_dir=out, config=config)
    return out


@pytest.fixture(scope="module")
def federation(tiny_bert: Path, profile, tmp_path_factory: pytest.TempPathFactory):
    """Four sites and a market holding an untrained learnware whose spec is exactly the sites'
    data (lw-0), two far from it, and a good learnware whose spec is far too (lw-good)."""
    root = tmp_path_factory.mktemp("federated-search")
    sites = [
        Site(
            name=name,
            data=write_task(root / f"{name}.jsonl", 50 + 30 * k, seed=k),
            ledger_path=root / name / "ledger.jsonl",
            dataset=f"notes-{name}",
            budget=Budget(epsilon=3.0, delta=1e-6),
        )
        for k, name in enumerate(SITES)
    ]
    texts = [t for s in sites[:3] for t in s.read().texts]
    exact = features_of(texts, profile).mean(axis=0)
    untrained, good = make_adapter(tiny_bert, root / "adapter"), _good_adapter(tiny_bert, root / "good")
    key = generate_key()
    learnwares = [
        ("lw-0", untrained, exact_spec(exact[None, :], profile), None),
        *((f"lw-{i + 1}", untrained, cluster_spec(profile, seed=i), None) for i in range(2)),
        ("lw-good", good, cluster_spec(profile, seed=7), PROBE),
    ]
    with (
        running_market(
            root / "market", profile, access=AccessPolicy.open_demo(), allow_local_base_models=True
        ) as market,
        MarketClient(market.address) as client,
    ):
        for learnware_id, adapter, spec, task in learnwares:
            package = root / f"{learnware_id}.tar"
            make_package(
                package,
                adapter,
                key=key,
                spec=spec,
                learnware_id=learnware_id,
                base_model=str(tiny_bert),
                task=task,
            )
            client.upload(package)
        yield root, sites, exact, market.address


@pytest.fixture(scope="module")
def search(federation, profile):
    root, sites, exact, market = federation
    out = root / "search.json"
    run_local(
        server,
        search_client,
        {s.name: {**s.node_config(), "honest-sites": 3} for s in sites},
        run_config=search_run_config(
            uuid.uuid4().hex, profile, out, epsilon=1.0, delta=1e-6, shares=3, market=market
        ),
        drop_after={"west": 2},  # answers the setup and key-sharing stages, then drops
    )
    return sites, exact, json.loads(out.read_text())


@pytest.mark.slow
def test_the_joint_spec_is_the_weighted_mean_of_the_sites_up_to_the_noise(search) -> None:
    sites, exact, summary = search
    spec = Spec.from_dict(summary["spec"])
    assert (summary["sites"], summary["contributors"]) == (4, 3)
    assert summary["records"] == sum(len(s.read().texts) for s in sites[:3])
    # the union's kernel mean is the count-weighted mean of the sites' means; the noise is N(0, sigma^2)
    z = (spec.values.astype(np.float64) - exact) / spec.privacy.sigma
    dim = z.size
    assert abs(z.mean()) < 5 / math.sqrt(dim)
    assert abs((z**2).mean() - 1) < 5 * math.sqrt(2 / dim)
    assert spec.privacy.epsilon == 1.0 and spec.privacy.delta == 1e-6


@pytest.mark.slow
def test_each_contributing_site_books_the_release_and_the_dropout_is_handled(search) -> None:
    sites, _, summary = search
    for site in sites[:3]:
        (entry,) = Ledger(site.ledger_path).state().releases
        assert entry.data["kind"] == "spec" and entry.dataset == site.dataset
        assert "secure sum" in entry.data["destination"] and entry.release.epsilon == 1.0
    assert Ledger(sites[3].ledger_path).state().releases == ()  # dropped before it released anything
    # the three contributors' noise is the calibrated one (three shares of three): one ordinary
    # Search with the joint spec finds the learnware whose spec is that data's
    assert summary["matches"][0]["id"] == "lw-0"


def test_integers_cross_flowers_quantization_exactly(profile) -> None:
    plan = plan_secure_spec(profile, epsilon=1.0, delta=1e-6, shares=2, sites=3)
    c = plan.clip
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((40, profile.feature_dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    y = [plan.contribution(rows).astype(np.float64) for _ in range(3)]
    quantized = [quantize([v], float(c), 2 * c)[0] for v in y]
    for q, v in zip(quantized, y, strict=True):  # Q = 2c: no rounding, no randomness
        assert np.array_equal(q.astype(np.int64), v.astype(np.int64) + c)
    total = np.sum(quantized, axis=0) % 2**32
    (shifted,) = dequantize([total], float(c), 2 * c)  # sum(y) + 3c - c
    recovered = np.rint(shifted - 2 * c)  # Flower's offset for 3 sites: -(3 - 1) c
    assert np.array_equal(recovered, np.sum(y, axis=0))


def test_the_distributed_noise_is_calibrated_like_one_release(profile) -> None:
    plan = plan_secure_spec(profile, epsilon=1.0, delta=1e-6, shares=3, sites=4)
    cal = plan.calibration
    assert cal.share_scale == pytest.approx(cal.sigma / cal.grid / math.sqrt(3))
    assert sum_tv(2.0**20, 3) == 0.0 and sum_tv(1.0, 1) == 0.0
    assert sum_tv(1.0, 2) == pytest.approx(10 * math.exp(-(math.pi**2) / 2))
    with pytest.raises(InvalidArgument, match="sites"):
        plan_secure_spec(profile, epsilon=1.0, delta=1e-6, shares=5, sites=4)


@pytest.mark.slow
def test_evaluating_together_reranks_the_search_by_dp_counts(federation, search) -> None:
    root, sites, _, market = federation
    _, _, found = search
    ranked = [m["id"] for m in found["matches"]]
    assert ranked[0] == "lw-0"  # the spec ranking: whose training data looks like the sites' data
    candidates = ["lw-0", "lw-good"]
    out = root / "evaluation.json"
    run_local(
        server,
        site_client,
        {s.name: s.node_config() for s in sites[:3]},
        run_config=evaluate_run_config(uuid.uuid4().hex, market, candidates, out, epsilon=1.0, delta=1e-6),
    )
    summary = json.loads(out.read_text())
    ranking = summary["ranking"]
    assert ranking[0]["id"] == "lw-good" and ranking[0]["spec_rank"] == 2  # whose answers are right
    assert ranking[0]["accuracy"] > ranking[-1]["accuracy"] + 5 * summary["accuracy_sd"]
    assert summary["records"] == sum(len(s.read().texts) for s in sites[:3])
    for site in sites[:3]:
        kinds = [e.data["kind"] for e in Ledger(site.ledger_path).state().releases]
        assert kinds == ["spec", "evaluation"]  # the search's release, then the noised counts
