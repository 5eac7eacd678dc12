"""Every generative model's per-example score on every user task, on one loaded base.

Models: the base alone ("base"), every learnware and the generalist, all as adapters of one
`SharedBase`. Per task and batch, the lower layers run once (no adapter touches them) and the
upper ones once per model (`lmdock.lab.loglik.SplitModel`). Scores per example:

* closed answer set: 1 if the gold choice has the highest log-likelihood, else 0 (accuracy);
* open answer (QA, math solutions): the gold continuation's token probability,
  exp(mean log p) over its first GOLD_TOKENS tokens.

Learnwares are pulled from the market and verified like any client would (`operations.pull`);
the matrix is cached in WORKDIR, keyed by the packages, the tasks and SCORING_VERSION.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lmdock.client.files import atomic_write_text
from lmdock.client.prompts import answer_ids, prompt_ids
from lmdock.client.runtime import SharedBase
from lmdock.common.canonical import canonical_json, sha256_hex
from lmdock.common.package import TaskInfo
from lmdock.lab.definitions import UserTask
from lmdock.lab.loglik import (
    SplitModel,
    batches,
    choice_questions,
    gold_questions,
    read_choices,
    read_gold,
)

__all__ = ["BASE", "GOLD_TOKENS", "GenScores", "first_adapted_layer", "score_models"]

SCORING_VERSION = 1
BASE = "base"
GOLD_TOKENS = 64
BATCH_TOKENS = 4096  # padded tokens per forward batch


@dataclass(frozen=True)
class GenScores:
    per_example: dict[str, dict[str, list[float]]]  # task -> model -> score of each scored example
    metric: dict[str, str]  # task -> "accuracy" or "gold_probability"
    one_pass: dict[str, bool]  # task -> scored from one forward pass per example
    seconds: dict[str, float]  # load, lower, upper

    def mean(self, task: str, model: str) -> float:
        return float(np.mean(self.per_example[task][model]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCORING_VERSION,
            "per_example": self.per_example,
            "metric": self.metric,
            "one_pass": self.one_pass,
            "seconds": self.seconds,
        }


def first_adapted_layer(adapter_dir: Path) -> int:
    """The lowest layer an adapter changes: the least layer number in its module names (0 when
    a name has none, i.e. it adapts that module in every layer)."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    numbers = [[int(p) for p in str(n).split(".") if p.isdigit()] for n in config["target_modules"]]
    return min((found[0] if found else 0 for found in numbers), default=0)


def _key(
    versions: Mapping[str, str], tasks: Sequence[UserTask], examples: int, base_model: str, where: str
) -> str:
    return sha256_hex(
        canonical_json(
            {
                "version": SCORING_VERSION,
                "base": base_model,
                "device": where,
                "adapters": dict(sorted(versions.items())),
                "examples": examples,
                "tasks": [[t.id, list(t.prompts), list(t.labels), list(t.choices)] for t in tasks],
            }
        )
    )[:16]


def score_models(
    base_model: str,
    adapters: Mapping[str, Path],
    tasks: Sequence[UserTask],
    *,
    examples: int,
    workdir: Path,
    log: Callable[[str], None],
    versions: Mapping[str, str],
    device: str = "cpu",
    dtype: str = "float32",
) -> GenScores:
    """Per-example scores of the base and each adapter on the first `examples` records of every
    task; `versions` names what each adapter is (its package file), for the cache key."""
    path = workdir / f"gen-scores-{_key(versions, tasks, examples, base_model, f'{device}/{dtype}')}.json"
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        return GenScores(data["per_example"], data["metric"], data["one_pass"], data["seconds"])
    seconds = {"load": 0.0, "lower": 0.0, "upper": 0.0}
    started = time.perf_counter()
    host = SharedBase(base_model, kind="generation", device=device, dtype=dtype)
    for name, folder in adapters.items():
        host.add(name, folder, TaskInfo(kind="generation"))
    split = min((first_adapted_layer(p) for p in adapters.values()), default=0)
    seconds["load"] = time.perf_counter() - started
    models = [BASE, *adapters]
    per_example: dict[str, dict[str, list[float]]] = {}
    metric, one_pass = {}, {}
    tokenizer = host.tokenizer
    pad = tokenizer.pad_token_id
    for task in tasks:
        n = min(examples, len(task.prompts))
        prompts = [prompt_ids(tokenizer, p, max_tokens=task.prompt_tokens) for p in task.prompts[:n]]
        if task.choices:
            choice_ids = [answer_ids(tokenizer, c) for c in task.choices]
            questions = choice_questions(prompts, choice_ids)
        else:
            golds = [answer_ids(tokenizer, g)[:GOLD_TOKENS] for g in task.labels[:n]]
            questions = gold_questions(prompts, golds)
        answers: dict[str, list[Any]] = {m: [] for m in models}
        for batch in batches(questions, tokens=BATCH_TOKENS):
            clock = time.perf_counter()
            with host.selected(None) as model:
                lower = SplitModel(model, split, pad_id=pad).lower(batch)
            seconds["lower"] += time.perf_counter() - clock
            clock = time.perf_counter()
            for m in models:
                with host.selected(None if m == BASE else m) as model:
                    answers[m].extend(SplitModel(model, split, pad_id=pad).upper(lower))
            seconds["upper"] += time.perf_counter() - clock
        if task.choices:
            gold = np.array([task.choices.index(y) for y in task.labels[:n]])
            per_example[task.id] = {
                m: (read_choices(a, choice_ids).argmax(1) == gold).astype(float).tolist()
                for m, a in answers.items()
            }
            metric[task.id], one_pass[task.id] = "accuracy", len(questions) == n
        else:
            per_example[task.id] = {m: [round(x, 6) for x in read_gold(a)] for m, a in answers.items()}
            metric[task.id], one_pass[task.id] = "gold_probability", False
        log(f"  scored {len(models)} models on {task.id} ({n} examples, {len(questions)} sequences)")
    scores = GenScores(per_example, metric, one_pass, {k: round(v, 2) for k, v in seconds.items()})
    atomic_write_text(path, json.dumps(scores.to_dict(), sort_keys=True))
    return scores
