"""LoRA fine-tuning of a learnware's adapter with peft: one plain torch loop, optionally DP-SGD.

`train_adapter` trains a classification or a generation adapter (see `training_tasks` for the
models and losses) and saves it as adapter_config.json + adapter_model.safetensors, nothing
else. With a `DPConfig` the same loop runs under Opacus DP-SGD (see `dp_sgd`) and the report
carries the (ε, δ) actually spent.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from lmdock.client.dp_sgd import DPConfig, DPReport, PrivateTraining
from lmdock.client.models import resolve_base_model
from lmdock.client.training_tasks import load_task_model
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import TaskInfo

__all__ = [
    "ClassifierTraining",
    "TrainingConfig",
    "TrainingReport",
    "tidy_adapter_folder",
    "train_adapter",
    "train_classifier",
]

Progress = Callable[[int, int, float], None]  # step, total steps, running loss


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 3
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_tokens: int = 64
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    seed: int = 0
    target_modules: tuple[str, ...] = ()  # () = the base model's attention query/value projections

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_tokens", "rank", "alpha"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"training {name} must be at least 1, got {getattr(self, name)}")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise InvalidArgument(f"learning rate must be positive, got {self.learning_rate}")
        if not 0 <= self.dropout < 1:
            raise InvalidArgument(f"LoRA dropout must be in [0, 1), got {self.dropout}")


#: The name lab/reference.py trains its classifiers with.
ClassifierTraining = TrainingConfig


@dataclass(frozen=True)
class TrainingReport:
    seconds: float
    final_loss: float
    records: int
    config: TrainingConfig
    dp: DPReport | None = None

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's `training` object: dp (always stated), its (ε, δ), and the settings."""
        out: dict[str, Any] = {"dp": self.dp is not None, "records": self.records}
        out.update({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()})
        if self.dp is not None:
            out.update(epsilon=self.dp.epsilon, delta=self.dp.delta, dp_sgd=self.dp.to_dict())
        return out


def train_adapter(
    *,
    base_model: str,
    task: TaskInfo,
    texts: Sequence[str],
    targets: Sequence[str],
    out_dir: Path,
    config: TrainingConfig = TrainingConfig(),
    dp: DPConfig | None = None,
    progress: Progress | None = None,
) -> TrainingReport:
    """Train a LoRA adapter for `task` on (text, target) pairs and save it to `out_dir`.

    Targets are labels (classification, each in task.labels) or answers (generation).
    """
    if len(texts) != len(targets) or not texts:
        raise InvalidArgument("need as many targets as texts, and at least one of each")
    if task.kind == "classification":
        unknown = sorted(set(targets) - set(task.labels))
        if unknown:
            raise InvalidArgument(f"labels not in the label set: {unknown[:5]}")
    if dp is not None:
        dp.check_records(len(texts))
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    tm = load_task_model(
        resolve_base_model(base_model),
        task,
        base_model=base_model,
        max_tokens=config.max_tokens,
        rank=config.rank,
        alpha=config.alpha,
        dropout=config.dropout,
        target_modules=config.target_modules,
    )
    tm.model.train()
    params = [p for p in tm.model.parameters() if p.requires_grad]
    optimiser: torch.optim.Optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(texts) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 1.0 - s / max(total, 1))
    private, batches = None, _shuffled_batches(len(texts), config.batch_size, config.seed)
    if dp is not None:
        private = PrivateTraining(
            tm.model,
            optimiser,
            records=len(texts),
            batch_size=config.batch_size,
            config=dp,
            epochs=config.epochs,
        )
        optimiser, batches = private.optimiser, private.batches
    started, step, running = time.perf_counter(), 0, 0.0
    try:
        for _epoch in range(config.epochs):
            for idx in batches():
                optimiser.zero_grad()
                if private is not None and not idx:
                    private.noise_only_step()
                else:
                    loss = tm.loss([texts[i] for i in idx], [targets[i] for i in idx])
                    if private is not None:
                        private.backward(loss)
                    else:
                        loss.backward()
                    optimiser.step()
                    value = float(loss.detach())
                    running = 0.9 * running + 0.1 * value if step > 0 else value
                scheduler.step()
                step += 1
                if progress is not None:
                    progress(step, total, running)
        report = private.report() if private is not None else None
    finally:
        if private is not None:
            private.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    tm.model.save_pretrained(str(out_dir), safe_serialization=True)
    tidy_adapter_folder(out_dir)
    return TrainingReport(
        seconds=time.perf_counter() - started,
        final_loss=running,
        records=len(texts),
        config=config,
        dp=report,
    )


def _shuffled_batches(records: int, batch_size: int, seed: int) -> Callable[[], Iterator[list[int]]]:
    """Each call: one epoch of index batches, in a fresh seeded shuffle (non-private training)."""
    rng, order = random.Random(seed), list(range(records))

    def epoch() -> Iterator[list[int]]:
        rng.shuffle(order)
        for start in range(0, records, batch_size):
            yield order[start : start + batch_size]

    return epoch


def train_classifier(
    *,
    base_model: str,
    texts: Sequence[str],
    labels: Sequence[str],
    label_names: Sequence[str],
    out_dir: Path,
    config: TrainingConfig = TrainingConfig(),
    progress: Progress | None = None,
) -> dict[str, float]:
    """Train and save a LoRA classification adapter (no DP); returns {"seconds", "final_loss"}."""
    report = train_adapter(
        base_model=base_model,
        task=TaskInfo(kind="classification", labels=tuple(label_names)),
        texts=texts,
        targets=labels,
        out_dir=out_dir,
        config=config,
        progress=progress,
    )
    return {"seconds": report.seconds, "final_loss": report.final_loss}


def tidy_adapter_folder(out_dir: Path) -> None:
    """Keep the adapter folder to exactly the two files of the package format."""
    for path in out_dir.iterdir():
        if path.name not in ("adapter_config.json", "adapter_model.safetensors"):
            path.unlink()
    config = json.loads((out_dir / "adapter_config.json").read_text())
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
