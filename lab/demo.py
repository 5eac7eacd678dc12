"""`lmdock demo`: the whole loop on an embedded market, as a hospital would live it.

1. build (first run only; cached) and publish the reference learnwares — finance, medical and
   math adapters on the MiniLM encoder — into a fresh SQLite + local-disk market on 127.0.0.1;
2. the hospital computes an (epsilon, delta)-DP spec of its held-out medical questions, sends
   only that spec, pulls the best match, verifies it and runs it locally;
3. print which learnware matched, whether it is the right one, and the task accuracy of the
   base model (zero-shot), the matched learnware and a random learnware (the expected accuracy
   of picking one uniformly), with the privacy spent and the bytes that left the client.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lmdock.client.cache import AdapterCache, default_cache_dir
from lmdock.client.connection import MarketClient
from lmdock.client.operations import pull, run_task, score_predictions, search_task
from lmdock.client.runtime import zero_shot_classify
from lmdock.client.task import TaskData
from lmdock.common.embedder_files import DEFAULT_EMBEDDER
from lmdock.common.profile_factory import make_profile
from lmdock.lab.embedded import embedded_market
from lmdock.lab.refdata import REFERENCE_SETS, label_set, load_split
from lmdock.lab.reference import build_reference

__all__ = ["demo_report", "run_demo"]

HOSPITAL_SAMPLE = "medquad"
EPSILON, DELTA = 1.0, 1e-6


def demo_report(workdir: Path, *, log: Any = print, quick: bool = False) -> dict[str, Any]:
    """Run the demo and return its report; `quick` trains tiny adapters (tests: the path only)."""
    started = time.perf_counter()
    profile = make_profile()
    packages = build_reference(workdir / "reference", profile, log=log, quick=quick)
    expected = next(r.card.id for r in REFERENCE_SETS if r.sample == HOSPITAL_SAMPLE)
    texts, labels = load_split(HOSPITAL_SAMPLE, "task")
    task = TaskData(texts=tuple(texts), labels=tuple(labels), answers=(None,) * len(texts))
    with (
        tempfile.TemporaryDirectory() as tmp,
        embedded_market(Path(tmp) / "market", profile=profile) as (address, _),
    ):
        with MarketClient(address) as publisher:
            for package in packages:
                publisher.upload(package)
        log(f"market on {address}: {len(packages)} learnwares published")
        cache = AdapterCache(Path(tmp) / "hospital-cache")
        with MarketClient(address) as hospital:  # everything the hospital sends is counted
            outcome = search_task(hospital, task.texts, epsilon=EPSILON, delta=DELTA)
            spec, result = outcome.spec, outcome.result
            matched = result.matches[0].learnware_id
            pull(hospital, cache, matched)
            bytes_sent = hospital.bytes_sent
        log(
            f"hospital: DP spec of {len(texts)} questions sent ({bytes_sent} bytes in all); matched {matched}"
        )
        base_score = (
            score_predictions(zero_shot_classify(DEFAULT_EMBEDDER, texts, label_set(HOSPITAL_SAMPLE)), labels)
            or 0.0
        )
        # The random baseline: the expected accuracy of a learnware picked uniformly at random.
        per_learnware = {}
        with MarketClient(address) as evaluator:
            for lw in evaluator.list():
                pull(evaluator, cache, lw.card.id)
                per_learnware[lw.card.id] = run_task(cache, lw.card.id, task).score or 0.0
    matched_score = per_learnware[matched]  # every learnware was run once, the matched one too
    random_score = sum(per_learnware.values()) / len(per_learnware)
    return {
        "task": f"{HOSPITAL_SAMPLE} held-out questions",
        "n": len(texts),
        "expected_id": expected,
        "matched_id": matched,
        "matched_correct": matched == expected,
        "ranking": [
            {"id": m.learnware_id, "score": round(m.score, 4), "distance": m.distance} for m in result.matches
        ],
        "scores": {"base": base_score, "matched": matched_score, "random": random_score},
        "per_learnware": per_learnware,
        "epsilon": spec.privacy.epsilon,
        "delta": spec.privacy.delta,
        "sigma": spec.privacy.sigma,
        "bytes_sent": bytes_sent,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _print_table(report: dict[str, Any]) -> None:
    s = report["scores"]
    rows = [
        ("task", f"{report['task']} (n={report['n']})"),
        (
            "matched learnware",
            f"{report['matched_id']} ({'right' if report['matched_correct'] else 'WRONG'}; "
            f"expected {report['expected_id']})",
        ),
        ("accuracy: base model (zero-shot)", f"{s['base']:.3f}"),
        ("accuracy: matched learnware", f"{s['matched']:.3f}"),
        ("accuracy: random learnware", f"{s['random']:.3f}"),
        (
            "privacy spent",
            f"epsilon={report['epsilon']:g}, delta={report['delta']:g} (sigma={report['sigma']:.4f})",
        ),
        ("bytes that left the client", f"{report['bytes_sent']} (spec + requests; no text, no embeddings)"),
        ("time", f"{report['seconds']} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nlmdock demo — a hospital finds a model without showing its data\n")
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


def run_demo(
    *, workdir: Path | None = None, as_json: bool = False, quick: bool = False, generative: bool = False
) -> int:
    workdir = workdir or default_cache_dir() / "demo"

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if generative:
        from lmdock.lab.gen_demo import generative_demo_report, print_generative_report

        print_generative_report(generative_demo_report(workdir, log=log, quick=quick), as_json=as_json)
        return 0

    report = demo_report(workdir, log=log, quick=quick)
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_table(report)
    return 0
