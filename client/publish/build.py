"""`lmdock build`: train an adapter on a task file, evaluate it on a held-out split, write a build folder.

A build folder holds exactly

    adapter_config.json, adapter_model.safetensors   the PEFT adapter (as a package holds it)
    build.json                                       what `lmdock package` needs (see `BuildInfo`)
    README.md                                        the model card so far (eval scores, DP)

It is written next to its destination and renamed into place, so a failed build leaves nothing.

Everything a DP build writes that a package carries is covered by its (epsilon, delta): the
adapter (DP-SGD), the held-out scores (noised counts, `scores`), the label set (declared by the
publisher, never read from the data: a classifier's package must name its labels, since the
head's outputs mean nothing without them), the training settings and the record counts
(public under replace-one, where n is fixed).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmdock.client.device import pick_device, pick_dtype
from lmdock.client.ledger import Debit, Ledger, dataset_id
from lmdock.client.models import resolve_base_model
from lmdock.client.operations import count_matches
from lmdock.client.progress import TrainingProgress
from lmdock.client.publish.model_card import render_model_card
from lmdock.client.publish.scores import SCORE_NAMES, ScorePlan, plan_scores
from lmdock.client.publish.training import (
    PROBE_TRAINING,
    TrainingConfig,
    dp_plan_for,
    train_adapter,
)
from lmdock.client.runtime import load_learnware, zero_shot_classify
from lmdock.client.task import TaskData, read_task_file
from lmdock.client.training.dp_sgd import DPConfig
from lmdock.common.errors import InvalidArgument
from lmdock.common.hashing import sha256_file
from lmdock.common.package import TaskInfo

__all__ = ["BUILD_FILE", "BuildInfo", "build_learnware", "infer_task", "training_config"]

BUILD_FILE = "build.json"
BUILD_FORMAT = "lmdock-build/1"


@dataclass(frozen=True)
class BuildInfo:
    base_model: str
    task: TaskInfo
    data: dict[str, Any]  # path, sha256, records, train_records, eval_records
    training: dict[str, Any]  # the manifest's `training` object (see TrainingReport.to_manifest)
    eval_scores: dict[str, float] = field(default_factory=dict)
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BUILD_FORMAT,
            "base_model": self.base_model,
            "task": self.task.to_dict(),
            "data": self.data,
            "training": self.training,
            "eval_scores": self.eval_scores,
            "created_at": self.created_at,
        }

    @classmethod
    def load(cls, folder: Path) -> BuildInfo:
        path = folder / BUILD_FILE
        if not path.is_file():
            raise InvalidArgument(
                f"{folder} is not a build folder (no {BUILD_FILE}); run `lmdock build` first"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != BUILD_FORMAT:
                raise InvalidArgument(f"{path} is not a {BUILD_FORMAT} file")
            return cls(
                base_model=str(data["base_model"]),
                task=TaskInfo.from_dict(data["task"]),
                data=dict(data["data"]),
                training=dict(data["training"]),
                eval_scores={str(k): float(v) for k, v in data["eval_scores"].items()},
                created_at=str(data.get("created_at", "")),
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidArgument(f"{path} is malformed: {exc}") from None


def infer_task(data: TaskData, kind: str | None, labels: Sequence[str] | None = None) -> TaskInfo:
    """classification when every record has a label, generation when every one has an answer;
    the label set is `labels` when the publisher declares it (every record's label must be in
    it), else the labels found in the data."""
    if kind is None:
        if data.has_labels and not data.has_answers:
            kind = "classification"
        elif data.has_answers and not data.has_labels:
            kind = "generation"
        else:
            raise InvalidArgument(
                'cannot tell the task from the data: give every record a "label" (classification) '
                'or an "answer" (generation), or pass --task'
            )
    if kind == "classification":
        if not data.has_labels:
            raise InvalidArgument('a classification task needs a "label" field on every record')
        found = {str(y) for y in data.labels}
        if labels is None:
            return TaskInfo(kind="classification", labels=tuple(sorted(found)))
        if len(set(labels)) != len(labels) or not all(label.strip() for label in labels):
            raise InvalidArgument("--labels must be distinct, non-empty labels")
        outside = sorted(found - set(labels))
        if outside:
            raise InvalidArgument(
                f"records have labels outside --labels: {', '.join(map(repr, outside[:5]))}"
                + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
            )
        return TaskInfo(kind="classification", labels=tuple(sorted(labels)))
    if kind == "generation":
        if not data.has_answers:
            raise InvalidArgument('a generation task needs an "answer" field on every record')
        return TaskInfo(kind="generation")
    raise InvalidArgument(f"--task must be classification or generation, got {kind!r}")


def _split(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if not 0 <= eval_fraction < 1:
        raise InvalidArgument(f"--eval-fraction must be in [0, 1), got {eval_fraction}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held_out = max(1, round(n * eval_fraction)) if eval_fraction else 0
    if n - held_out < 1:
        raise InvalidArgument(f"{n} records leave nothing to train on after the held-out split")
    return sorted(order[held_out:]), sorted(order[:held_out])


def _evaluate(
    adapter: Path,
    base_model: str,
    task: TaskInfo,
    texts: list[str],
    gold: list[str],
    *,
    max_new_tokens: int | None,
    device: str,
    dtype: str,
) -> dict[str, int]:
    """Held-out counts (see scores.SCORE_NAMES): correct answers of the adapter, of the base model
    alone, and (classification) the records of the majority class.

    A generation is cut at `max_new_tokens`, or (None) 2 tokens past the longest gold answer;
    a DP build passes a public cap, so that one held-out record cannot change every other
    record's prediction and each count keeps sensitivity 1."""
    model = load_learnware(adapter, base_model=base_model, task=task, device=device, dtype=dtype)
    if task.kind == "classification":
        base = zero_shot_classify(base_model, texts, task.labels, device=device)
        counts: tuple[int, ...] = (
            count_matches(model.predict(texts), gold),
            count_matches(base, gold),
            max(gold.count(label) for label in task.labels),
        )
    else:
        tokens = max_new_tokens or (
            max(len(model.tokenizer(" " + g, add_special_tokens=False)["input_ids"]) for g in gold) + 2
        )
        tuned = model.predict(texts, max_new_tokens=tokens)
        with model.model.disable_adapter():
            base = model.predict(texts, max_new_tokens=tokens)
        counts = (count_matches(tuned, gold), count_matches(base, gold))
    return dict(zip(SCORE_NAMES[task.kind], counts, strict=True))


def _released_scores(counts: dict[str, int], held_out: int, plan: ScorePlan | None) -> dict[str, float]:
    """The scores as they leave: exact fractions without DP, noised counts with it."""
    if plan is None:
        return {name: c / held_out for name, c in counts.items()}
    return plan.release(counts)


def _build_privacy(training: dict[str, Any], plan: ScorePlan | None) -> dict[str, Any]:
    """The manifest's training object: under DP its epsilon/delta cover the adapter and the
    scores, max of the two by parallel composition (scores module docstring)."""
    if plan is None:
        return training
    cost = plan.calibration
    return {
        **training,
        "epsilon": max(float(training["epsilon"]), cost.epsilon),
        "delta": max(float(training["delta"]), cost.delta),
        "eval_scores": plan.to_manifest(),
    }


def training_config(task: TaskInfo, settings: Mapping[str, Any] | None = None) -> TrainingConfig:
    """The recipe's defaults (a linear probe for mean-pooled classifiers, else LoRA) + `settings`."""
    base = PROBE_TRAINING if task.pooling == "mean" else TrainingConfig()
    try:
        return replace(base, **dict(settings or {}))
    except TypeError as exc:
        raise InvalidArgument(f"unknown training setting: {exc}") from None


def build_learnware(
    *,
    base_model: str,
    data_path: Path,
    out: Path,
    task_kind: str | None = None,
    settings: Mapping[str, Any] | None = None,
    dp: DPConfig | None = None,
    eval_fraction: float = 0.1,
    labels: Sequence[str] | None = None,
    score_epsilon: float | None = None,
    progress: TrainingProgress | None = None,
    ledger: Ledger | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> tuple[BuildInfo, Debit | None]:
    """Train, evaluate and write the build folder `out` (which must not exist or be empty);
    return the build and the ledger's debit for it (None without DP or a ledger).

    `settings` overrides the recipe's TrainingConfig defaults. `labels` declares a classifier's
    label set (a DP classification build needs it). With `dp`, a classifier is a linear probe on
    mean-pooled states (`lmdock.client.publish.probe`), the held-out scores are released as
    noised counts at (`score_epsilon`, default min(0.5, dp.epsilon); dp.delta), and both the run
    and the scores are debited from `ledger` (data set: every text of the data file) before
    training starts: over the budget, BudgetExceeded and nothing is trained or written.
    `device` and `dtype` (as `lmdock run` takes them) are where training and the held-out
    evaluation run: auto is a GPU in bfloat16 where there is one, else the cpu in float32.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidArgument(f"{out} already exists and is not an empty folder: choose another --out")
    data = read_task_file(data_path)
    task = infer_task(data, task_kind, labels)
    if dp is not None and task.kind == "classification":
        if labels is None:
            raise InvalidArgument(
                "a DP classification build publishes its label set, and labels read from the data "
                "are not covered by DP: declare the labels with --labels a,b,c"
            )
        task = replace(task, pooling="mean")
    config = training_config(task, settings)
    targets = [str(t) for t in (data.labels if task.kind == "classification" else data.answers)]
    train, held_out = _split(len(data.texts), eval_fraction, config.seed)
    plan = dp_plan_for(dp, records=len(train), config=config)
    score_plan = None
    if dp is not None and held_out:
        score_plan = plan_scores(
            task.kind,
            held_out=len(held_out),
            epsilon=min(0.5, dp.epsilon) if score_epsilon is None else score_epsilon,
            delta=dp.delta,
        )
    # a missing base model or an unusable device fails before anything is debited
    resolve_base_model(base_model)
    pick_dtype(dtype, pick_device(device))
    debit = None
    if plan is not None and ledger is not None:
        dataset, where = dataset_id(data.texts), f"build {out.resolve()}"
        if score_plan is not None:  # the smaller release first, once the run alone would fit
            ledger.state().check(dataset, plan.release(), kind="training")
            ledger.record(dataset, score_plan.cost, kind="training", destination=f"{where} (scores)")
        debit = ledger.record(dataset, plan.release(), kind="training", destination=where)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        report = train_adapter(
            base_model=base_model,
            task=task,
            texts=[data.texts[i] for i in train],
            targets=[targets[i] for i in train],
            out_dir=staging,
            config=config,
            dp=plan,
            progress=progress,
            device=device,
            dtype=dtype,
        )
        scores = {}
        if held_out:
            counts = _evaluate(
                staging,
                base_model,
                task,
                [data.texts[i] for i in held_out],
                [targets[i] for i in held_out],
                max_new_tokens=None if score_plan is None else config.max_tokens,
                device=device,
                dtype=dtype,
            )
            scores = _released_scores(counts, len(held_out), score_plan)
        info = BuildInfo(
            base_model=base_model,
            task=task,
            data={
                "path": str(data_path.resolve()),
                "sha256": sha256_file(data_path),
                "records": len(data.texts),
                "train_records": len(train),
                "eval_records": len(held_out),
            },
            training=_build_privacy(report.to_manifest(), score_plan),
            eval_scores=scores,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        (staging / BUILD_FILE).write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n")
        (staging / "README.md").write_text(render_model_card(info), encoding="utf-8")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info, debit
