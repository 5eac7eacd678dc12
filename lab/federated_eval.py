"""`lmdock-lab eval --federated`: what a federation of sites adds, on real data (issue 20 item 5).

Two halves, each in its own module: training one DP classifier by a federation vs each site
alone vs pooled, with and without DP (`federated_train`), and identifying a user task's
learnware by the sites' joint spec vs each site's own, at the same epsilon (`federated_ident`).
Results go to results/federated/federated.json, the figure and docs/results.md's section are
written by `federated_doc`.

Why Twitter Financial News Sentiment for the training half: three labels (bearish, bullish,
neutral; neutral is about two thirds, so macro-F1 is reported beside accuracy) let a Dirichlet
label skew give every site a visibly different label mix with a few hundred records, and a
linear probe on MiniLM is far from perfect on it (measured: 0.72 accuracy, 0.59 macro-F1
pooled without DP on 600 records), so the columns can differ. BANKING77's 77 intents leave a
few records per label per site; MedQuAD's question types are read off the first words of each
question, too easy to separate the columns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdock.common.profile_factory import make_profile
from lmdock.lab.federated_ident import IdentSettings, run_identification
from lmdock.lab.federated_train import TrainSettings, run_training
from lmdock.lab.reference_market import FULL, QUICK

__all__ = ["FULL_FED", "QUICK_FED", "FedSettings", "evaluate_federated"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class FedSettings:
    train: TrainSettings
    ident: IdentSettings


FULL_FED = FedSettings(
    TrainSettings(
        dataset="finance/twitter_financial_news_sentiment",
        sites=(3,),
        train_cap=600,
        test_cap=400,
        epsilons=(None, 4.0, 1.0),
        seeds=(0,),
        min_site=100,
    ),
    IdentSettings(quick=False, sites=3, epsilons=(2.0, 1.0, 0.5), draws=100, learnware_cap=200),
)
QUICK_FED = FedSettings(
    TrainSettings(
        dataset="tfns",
        sites=(3,),
        train_cap=120,
        test_cap=60,
        epsilons=(None, 8.0),
        seeds=(0,),
        min_site=25,
        local_epochs=2,
        max_tokens=16,
    ),
    IdentSettings(quick=True, sites=3, epsilons=(1.0,), draws=100, n=90, learnware_cap=30, task_cap=90),
)


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def evaluate_federated(
    *, data_root: Path, settings: FedSettings, embeddings: Path | None, log: Log = print
) -> dict[str, Any]:
    """Both halves, as plain data (federated.json)."""
    started = time.perf_counter()
    before = _machine()
    training = run_training(settings.train, data_root, log=log)
    search = run_identification(
        settings.ident,
        catalogue=QUICK if settings.ident.quick else FULL,
        data_root=data_root,
        profile=make_profile(),
        embeddings=embeddings,
        log=log,
    )
    return {
        "quick": settings.ident.quick,
        "training": training,
        "search": search,
        "machine": {"before": before, "after": _machine()},
        "seconds": round(time.perf_counter() - started, 1),
    }
