"""The training half of `lmdock-lab eval --federated`: one DP classifier built by a federation,
by each site alone, and by all the sites' records pooled at one site, with and without DP.

The sites' records are a non-IID split of one labelled data set's training part (u >= 0.4 of
`datasets.position`): for each label, a Dirichlet(alpha) draw over the sites says which share
of that label's records each site holds (label skew, as in Hsu et al. 2019), redrawn until
every site has at least `min_site` records. The test set is the public held-out part
(u < 0.4), the same for every column.

Every column trains the same linear probe (`client/publish/training.train_adapter`, the loop
`federated/build_site.py` runs), for the same number of epochs in all (a federation's rounds
times its local epochs), at the same (epsilon, delta) per site:

* **alone**: one site's records, `DPConfig(epsilon, delta)` (a `lmdock build --dp-epsilon`);
* **pooled**: every site's records at one site, the same DP at the same epsilon (the upper
  reference: what the sites would get if they could share their data);
* **federated**: Flower's FedAvg over the sites, the real ServerApp and ClientApp
  (`lmdock.federated.apps`, `local_grid.run_local`: what `federate_build` runs, less its joint
  spec), each site booking DP-SGD at epsilon in its own ledger before round 1.

Without DP (epsilon None) alone and pooled train plain SGD. The federation's ClientApp has no
non-DP mode, by design (a site never trains without DP because a server asked), so the
non-DP federated column runs the same ServerApp (`AdapterFedAvg`) against `PLAIN_CLIENT`, a
lab-only ClientApp that trains each round with plain SGD and books nothing: a reference, never
a deployment option.

A probe leaves the encoder frozen and LoRA at its identity, so every adapter is scored by its
head on the test set's encoder features, computed once (`probe_features`): the same logits
the runtime computes (the test checks it against `load_learnware`).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from lmdock.client.models import resolve_base_model
from lmdock.client.publish.probe import probe_features
from lmdock.client.publish.training import train_adapter
from lmdock.client.training.dp_sgd import DPConfig
from lmdock.client.training.objectives import load_task_model
from lmdock.common.accounting import Budget
from lmdock.common.embedder_files import DEFAULT_EMBEDDER
from lmdock.federated.apps import client, server
from lmdock.federated.build import ADAPTER_FILE, FEDERATION_FILE, build_run_config
from lmdock.federated.build_site import BuildSettings, local_update, round_reply
from lmdock.federated.local_grid import run_local
from lmdock.federated.site import Site
from lmdock.lab.datasets import Selection, load_records, select
from safetensors.torch import load_file

__all__ = [
    "PLAIN_CLIENT",
    "TrainSettings",
    "dirichlet_split",
    "head_scores",
    "macro_f1",
    "run_training",
]

Log = Callable[[str], None]
TRAIN_PART = (0.4, 1.0)
TEST_PART = (0.0, 0.4)


@dataclass(frozen=True)
class TrainSettings:
    dataset: str
    sites: tuple[int, ...]  # federations of this many sites
    train_cap: int  # training records shared among the sites
    test_cap: int
    epsilons: tuple[float | None, ...]  # per site; None: no DP
    seeds: tuple[int, ...]  # each: a fresh training seed and fresh DP noise (the split is fixed)
    alpha: float = 0.3
    min_site: int = 20
    delta: float = 1e-6
    rounds: int = 2
    local_epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 0.1
    max_tokens: int = 64
    base_model: str = DEFAULT_EMBEDDER
    split_seed: int = 0


def dirichlet_split(
    labels: Sequence[str], sites: int, *, alpha: float, seed: int, min_site: int
) -> list[list[int]]:
    """Record indices per site: each label's records cut by a Dirichlet(alpha) draw over the
    sites (seeded), redrawn until every site holds at least `min_site` records."""
    rng = np.random.default_rng(seed)
    names = sorted(set(labels))
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(sites)]
        for name in names:
            idx = np.array([i for i, y in enumerate(labels) if y == name])
            rng.shuffle(idx)
            cuts = (np.cumsum(rng.dirichlet([alpha] * sites))[:-1] * len(idx)).astype(int)
            for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
                part.extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_site:
            return [sorted(p) for p in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gives {sites} sites {min_site} records each")


def macro_f1(predicted: Sequence[str], gold: Sequence[str], labels: Sequence[str]) -> float:
    """The unweighted mean over the labels present in `gold` of each label's F1."""
    scores = []
    for label in sorted(set(gold)):
        tp = sum(p == g == label for p, g in zip(predicted, gold, strict=True))
        fp = sum(p == label != g for p, g in zip(predicted, gold, strict=True))
        fn = sum(g == label != p for p, g in zip(predicted, gold, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def _head(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = load_file(folder / ADAPTER_FILE)
    head = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if ".classifier." in k}
    return head["weight"], head["bias"]


def head_scores(
    folder: Path, features: torch.Tensor, gold: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Held-out accuracy and macro-F1 of the adapter in `folder`, from the test features."""
    weight, bias = _head(folder)
    predicted = [labels[int(i)] for i in (features @ weight.T + bias).argmax(dim=1)]
    correct = sum(p == g for p, g in zip(predicted, gold, strict=True))
    return {
        "accuracy": round(correct / len(gold), 4),
        "macro_f1": round(macro_f1(predicted, gold, labels), 4),
        "predicted": dict(sorted({y: predicted.count(y) for y in labels}.items())),
    }


def _plain_round(message: Message, context: Context) -> Message:
    """A lab site's round without DP: plain SGD from the global adapter, nothing booked."""
    site = Site.from_node_config(context.node_config)
    config = message.content["config"]
    arrays = message.content["arrays"]
    assert isinstance(config, ConfigRecord) and isinstance(arrays, ArrayRecord)
    settings = BuildSettings.from_config(config)
    data = site.read()
    tensors = local_update(settings, data, arrays, dp=None)
    steps = settings.local_epochs * math.ceil(len(data.texts) / settings.batch_size)
    metrics = {"epsilon": math.inf, "delta": 0.0, "noise-multiplier": 0.0, "sample-rate": 1.0, "steps": steps}
    return round_reply(message, site, data, tensors, metrics)


#: The non-DP reference federation's sites (module docstring): never a deployment option.
PLAIN_CLIENT = ClientApp()
PLAIN_CLIENT.train()(_plain_round)


def _write_site(path: Path, texts: Sequence[str], labels: Sequence[str]) -> Path:
    rows = (
        json.dumps({"text": t, "label": y}, ensure_ascii=False) for t, y in zip(texts, labels, strict=True)
    )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class _Run:
    settings: TrainSettings
    labels: tuple[str, ...]
    test_features: torch.Tensor
    test_gold: list[str]
    root: Path

    def build(self, epsilon: float | None, seed: int) -> BuildSettings:
        s = self.settings
        return BuildSettings(
            federation=uuid.uuid4().hex,
            base_model=s.base_model,
            labels=self.labels,
            rounds=s.rounds,
            local_epochs=s.local_epochs,
            epsilon=1.0 if epsilon is None else epsilon,  # unused by PLAIN_CLIENT
            delta=s.delta,
            batch_size=s.batch_size,
            learning_rate=s.learning_rate,
            max_tokens=s.max_tokens,
            seed=seed,
        )

    def one_site(
        self, texts: Sequence[str], targets: Sequence[str], epsilon: float | None, seed: int
    ) -> dict[str, Any]:
        """A site training alone (or the pooled site) for the federation's epochs in all."""
        build = self.build(epsilon, seed)
        config = replace(build.training(), epochs=build.rounds * build.local_epochs)
        dp = None if epsilon is None else DPConfig(epsilon=epsilon, delta=self.settings.delta)
        with tempfile.TemporaryDirectory() as tmp:
            train_adapter(
                base_model=build.base_model,
                task=build.task,
                texts=texts,
                targets=targets,
                out_dir=Path(tmp),
                config=config,
                dp=dp,
            )
            return head_scores(Path(tmp), self.test_features, self.test_gold, self.labels)

    def federated(self, files: Sequence[Path], epsilon: float | None, seed: int) -> dict[str, Any]:
        build = self.build(epsilon, seed)
        home = Path(tempfile.mkdtemp(dir=self.root))
        sites = [
            Site(
                f"site{j}",
                f,
                home / f"site{j}" / "ledger.jsonl",
                f"notes-{j}",
                Budget(epsilon=10.0, delta=1e-6),
            )
            for j, f in enumerate(files)
        ]
        out = home / "build"
        run_local(
            server,
            client if epsilon is not None else PLAIN_CLIENT,
            {s.name: s.node_config() for s in sites},
            run_config=build_run_config(build, out),
        )
        summary = json.loads((out / FEDERATION_FILE).read_text())
        if summary["refused"]:
            raise RuntimeError(f"a site refused the federated build: {summary['refused']}")
        scores = head_scores(out, self.test_features, self.test_gold, self.labels)
        booked = [s["epsilon"] for s in summary["sites"]]
        return {**scores, "site_epsilons": [None if math.isinf(e) else e for e in booked]}


def run_training(
    settings: TrainSettings, data_root: Path, *, log: Log = print, workdir: Path | None = None
) -> dict[str, Any]:
    """Every column for every federation size, epsilon and seed, as plain data."""
    started = time.perf_counter()
    records = load_records(data_root, settings.dataset)
    train = select(records, Selection(settings.dataset, "label", TRAIN_PART, limit=settings.train_cap))
    test = select(records, Selection(settings.dataset, "label", TEST_PART, limit=settings.test_cap))
    labels = tuple(sorted({y for _, y in train} | {y for _, y in test}))
    texts, targets = [r.text for r, _ in train], [y for _, y in train]
    build = BuildSettings(
        "features", settings.base_model, labels, 1, 1, 1.0, settings.delta, max_tokens=settings.max_tokens
    )
    tm = load_task_model(
        resolve_base_model(settings.base_model),
        build.task,
        base_model=settings.base_model,
        max_tokens=settings.max_tokens,
        rank=build.training().rank,
        alpha=build.training().alpha,
        dropout=build.training().dropout,
    )
    test_gold = [y for _, y in test]
    log(f"federated training: {len(train)} training and {len(test)} test records of {settings.dataset}")
    test_features = probe_features(tm, [r.text for r, _ in test])
    out: dict[str, Any] = {
        "settings": asdict(settings),
        "dataset": settings.dataset,
        "labels": list(labels),
        "train_records": len(train),
        "test_records": len(test),
        "test_histogram": {y: test_gold.count(y) for y in labels},
        "majority": round(max(test_gold.count(y) for y in labels) / len(test_gold), 4),
        "federations": [],
    }
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        run = _Run(settings, labels, test_features, test_gold, Path(tmp))
        for k in settings.sites:
            parts = dirichlet_split(
                targets, k, alpha=settings.alpha, seed=settings.split_seed, min_site=settings.min_site
            )
            files = [
                _write_site(Path(tmp) / f"k{k}-site{j}.jsonl", [texts[i] for i in p], [targets[i] for i in p])
                for j, p in enumerate(parts)
            ]
            federation: dict[str, Any] = {
                "sites": k,
                "site_records": [len(p) for p in parts],
                "site_histograms": [{y: sum(targets[i] == y for i in p) for y in labels} for p in parts],
                "runs": [],
            }
            for epsilon in settings.epsilons:
                for seed in settings.seeds:
                    t0 = time.perf_counter()
                    log(f"  {k} sites, epsilon {epsilon}, seed {seed}")
                    alone = [
                        run.one_site([texts[i] for i in p], [targets[i] for i in p], epsilon, seed)
                        for p in parts
                    ]
                    pooled = run.one_site(texts, targets, epsilon, seed)
                    fed = run.federated(files, epsilon, seed)
                    federation["runs"].append(
                        {
                            "epsilon": epsilon,
                            "seed": seed,
                            "alone": alone,
                            "pooled": pooled,
                            "federated": fed,
                            "seconds": round(time.perf_counter() - t0, 1),
                        }
                    )
            out["federations"].append(federation)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
