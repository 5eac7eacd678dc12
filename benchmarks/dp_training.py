"""Held-out accuracy of DP-trained classification learnwares against epsilon, on real tasks.

For each task (MedQuAD question types, 15 labels; Twitter Financial News sentiment, 3
labels; from the shared data, see `corpus`), the records are shuffled once (seed 0), the last
`--test` are held out and up to `--train` of the others train. Each run goes through the code
`lmdock build --dp-epsilon` runs: `train_adapter` with a mean-pooled classifier (a linear probe,
`lmdock.client.publish.probe`), DP-SGD calibrated for replace-one neighbours at delta = 1e-6 with the
default recipe (`PROBE_TRAINING`), then `load_learnware(...).predict` on the held-out texts.
DP noise is fresh in every run (OS CSPRNG), so each epsilon is run `--repeats` times.

Baselines on the same held-out records: the majority class of the training labels, the base
model zero-shot (each text to the closest label name), the same probe without DP, and with
`--lora` the default non-DP build (LoRA r = 8 + the [CLS] head, 3 epochs).

    nice -n 10 python benchmarks/dp_training.py --json [--repeats 3] [--epsilons 1,3,8] [--lora]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from corpus import data_dir, read_records
from lmdock.client.publish.training import PROBE_TRAINING, TrainingConfig, train_adapter
from lmdock.client.runtime import load_learnware, zero_shot_classify
from lmdock.client.training.dp_sgd import DPConfig
from lmdock.common.package import TaskInfo

BASE = "sentence-transformers/all-MiniLM-L6-v2"
TASKS = {"medquad": "medical/medquad", "tfns": "finance/twitter_financial_news_sentiment"}
DELTA = 1e-6


def split(name: str, train: int, test: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records = read_records(data_dir() / TASKS[name] / "data.jsonl")
    random.Random(0).shuffle(records)
    return records[: min(train, len(records) - test)], records[-test:]


def accuracy(predictions: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(predictions, gold, strict=True)) / len(gold)


def run(
    task: TaskInfo, train: list[dict[str, Any]], test: list[dict[str, Any]], config: TrainingConfig, dp: Any
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = train_adapter(
            base_model=BASE,
            task=task,
            texts=[r["text"] for r in train],
            targets=[r["label"] for r in train],
            out_dir=Path(tmp) / "adapter",
            config=config,
            dp=dp,
        )
        seconds = time.perf_counter() - started
        model = load_learnware(Path(tmp) / "adapter", base_model=BASE, task=task, device="cpu")
        score = accuracy(model.predict([r["text"] for r in test]), [r["label"] for r in test])
    out: dict[str, Any] = {"accuracy": round(score, 4), "train_seconds": round(seconds, 1)}
    if report.dp is not None:
        out |= {
            "epsilon": round(report.dp.epsilon, 4),
            "epsilon_add_remove": round(report.dp.epsilon_add_remove, 4),
            "noise_multiplier": round(report.dp.noise_multiplier, 4),
            "sample_rate": report.dp.sample_rate,
            "steps": report.dp.steps,
        }
    return out


def bench_task(name: str, args: argparse.Namespace) -> dict[str, Any]:
    train, test = split(name, args.train, args.test)
    labels = tuple(sorted({r["label"] for r in train + test}))
    probe = TaskInfo(kind="classification", labels=labels, pooling="mean")
    gold = [r["label"] for r in test]
    majority = Counter(r["label"] for r in train).most_common(1)[0][0]
    zero_shot = zero_shot_classify(BASE, [r["text"] for r in test], labels, device="cpu")
    result: dict[str, Any] = {
        "train": len(train),
        "test": len(test),
        "labels": len(labels),
        "majority": round(accuracy([majority] * len(test), gold), 4),
        "base_zero_shot": round(accuracy(zero_shot, gold), 4),
        "dp": [],
    }
    for epsilon in args.epsilons:
        runs = [
            run(probe, train, test, PROBE_TRAINING, DPConfig(epsilon=epsilon, delta=DELTA))
            for _ in range(args.repeats)
        ]
        scores = [r["accuracy"] for r in runs]
        result["dp"].append(
            {
                "epsilon": epsilon,
                "accuracy_mean": round(statistics.fmean(scores), 4),
                "accuracy_min": min(scores),
                "accuracy_max": max(scores),
                "runs": runs,
            }
        )
        print(f"{name} epsilon={epsilon:g}: {scores}", file=sys.stderr, flush=True)
    result["no_dp_probe"] = run(probe, train, test, PROBE_TRAINING, None)
    if args.lora:
        cls_task = replace(probe, pooling="cls")
        result["no_dp_lora"] = run(cls_task, train, test, TrainingConfig(), None)
    return result


def table(results: dict[str, Any], epsilons: list[float]) -> str:
    head = ["task", "train", "majority", "zero-shot", *(f"eps={e:g}" for e in epsilons), "no DP (probe)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        dp = [f"{d['accuracy_mean']:.3f} ({d['accuracy_min']:.3f}-{d['accuracy_max']:.3f})" for d in r["dp"]]
        row = [name, str(r["train"]), f"{r['majority']:.3f}", f"{r['base_zero_shot']:.3f}", *dp]
        row.append(f"{r['no_dp_probe']['accuracy']:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def quiet() -> None:
    """Model libraries report every fresh head and offline lookup; the JSON is what matters."""
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main() -> None:
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tasks", default="medquad,tfns")
    parser.add_argument("--epsilons", default="1,3,8", type=lambda s: [float(x) for x in s.split(",")])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--lora", action="store_true", help="also the default non-DP LoRA build (slow)")
    args = parser.parse_args()
    results = {name: bench_task(name, args) for name in args.tasks.split(",")}
    recipe = asdict(PROBE_TRAINING)
    report = {"delta": DELTA, "neighbouring": "replace-one", "recipe": recipe, "tasks": results}
    print(json.dumps(report, indent=2, default=list) if args.json else table(results, args.epsilons))


if __name__ == "__main__":
    main()
