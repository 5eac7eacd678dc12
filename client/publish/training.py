"""Training a learnware's adapter with peft: one plain torch loop, optionally DP-SGD.

`train_adapter` trains a classification or a generation adapter (see `training_tasks` for the
models and losses) and saves it as adapter_config.json + adapter_model.safetensors, nothing
else: LoRA and the task head, or, for a mean-pooled classifier, the head alone (`probe`).
With a `DPConfig` (or a `DPPlan`) the same loop runs under Opacus DP-SGD (see `dp_sgd`) and
the report carries the (ε, δ) spent.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from lmdock.client.device import pick_device, pick_dtype
from lmdock.client.models import resolve_base_model
from lmdock.client.progress import TrainingProgress
from lmdock.client.publish.probe import linear_probe
from lmdock.client.training.dp_sgd import DPConfig, DPPlan, DPReport, PrivateTraining, plan_dp_sgd
from lmdock.client.training.objectives import LowerCaches, load_task_model
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import TaskInfo
from peft import get_peft_model_state_dict, set_peft_model_state_dict

__all__ = [
    "PROBE_TRAINING",
    "TrainingConfig",
    "TrainingReport",
    "dp_plan_for",
    "load_adapter_tensors",
    "tidy_adapter_folder",
    "train_adapter",
    "train_classifier",
]


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
    #: LoRA on the top `layers` decoder layers only (0: all): backward stops below them, and the
    #: frozen lower layers' activations are shared by every such adapter (`lmdock.lab.loglik`).
    layers: int = 0

    def __post_init__(self) -> None:
        if self.layers < 0:
            raise InvalidArgument(f"training layers must be 0 (all) or more, got {self.layers}")
        for name in ("epochs", "batch_size", "max_tokens", "rank", "alpha"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"training {name} must be at least 1, got {getattr(self, name)}")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise InvalidArgument(f"learning rate must be positive, got {self.learning_rate}")
        if not 0 <= self.dropout < 1:
            raise InvalidArgument(f"LoRA dropout must be in [0, 1), got {self.dropout}")


#: Defaults of a linear probe (a mean-pooled classifier: what DP classification builds train),
#: measured with benchmarks/dp_training.py (docs/publishing.md).
PROBE_TRAINING = TrainingConfig(epochs=10, learning_rate=0.1, batch_size=128)


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
    dp: DPConfig | DPPlan | None = None,
    progress: TrainingProgress | None = None,
    start: Mapping[str, torch.Tensor] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    lower_caches: LowerCaches | None = None,
) -> TrainingReport:
    """Train a LoRA adapter (or, for a mean-pooled classifier, its head alone: see `probe`) for
    `task` on (text, target) pairs and save it to `out_dir`.

    Targets are labels (classification, each in task.labels) or answers (generation). `dp` is a
    DPConfig, or the DPPlan a caller already debited from its privacy ledger. `start` holds the
    adapter's tensors to start from (as `adapter_model.safetensors` names them: a federated
    round starts from the global adapter); None starts from a fresh adapter. `device` and `dtype`
    are the base model's, as the daemon names them (`lmdock.client.device`: auto is cuda, then
    mps, then the cpu; bfloat16 on a GPU that has it, float32 on the cpu). `lower_caches`
    shares a top-layer generative adapter's lower-layer activations with other runs on the same
    base (`objectives.LowerCaches`): the same adapter, trained faster where their records overlap.
    """
    if len(texts) != len(targets) or not texts:
        raise InvalidArgument("need as many targets as texts, and at least one of each")
    if task.kind == "classification":
        unknown = sorted(set(targets) - set(task.labels))
        if unknown:
            raise InvalidArgument(f"labels not in the label set: {unknown[:5]}")
    plan = dp_plan_for(dp, records=len(texts), config=config)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    torch_device = pick_device(device)
    tm = load_task_model(
        resolve_base_model(base_model),
        task,
        base_model=base_model,
        max_tokens=config.max_tokens,
        rank=config.rank,
        alpha=config.alpha,
        dropout=config.dropout,
        target_modules=config.target_modules,
        layers=config.layers,
        device=torch_device,
        dtype=pick_dtype(dtype, torch_device),
        lower_caches=lower_caches,
    )
    if start is not None:
        load_adapter_tensors(tm.model, start)
    tm.model.train()
    started = time.perf_counter()
    scheduler = None
    if task.pooling == "mean":
        module, loss_of, optimiser = linear_probe(
            tm, texts, targets, learning_rate=config.learning_rate, zero_head=start is None
        )
    else:
        module = tm.model
        optimiser = torch.optim.AdamW(
            [p for p in tm.model.parameters() if p.requires_grad], lr=config.learning_rate
        )
        total = math.ceil(len(texts) / config.batch_size) * config.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 1.0 - s / max(total, 1))

        def lora_loss(idx: list[int]) -> torch.Tensor:
            return tm.loss([texts[i] for i in idx], [targets[i] for i in idx])

        loss_of = lora_loss
    final_loss, report = _run_epochs(
        module,
        optimiser,
        loss_of,
        records=len(texts),
        config=config,
        plan=plan,
        scheduler=scheduler,
        progress=progress,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tm.model.save_pretrained(str(out_dir), safe_serialization=True)
    tidy_adapter_folder(out_dir)
    return TrainingReport(
        seconds=time.perf_counter() - started,
        final_loss=final_loss,
        records=len(texts),
        config=config,
        dp=report,
    )


def load_adapter_tensors(model: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Set a fresh PEFT model's adapter to `tensors`, which must be exactly its own tensors."""
    own = get_peft_model_state_dict(model)
    if set(own) != set(tensors):
        raise InvalidArgument(
            f"the adapter tensors do not fit this model: {sorted(set(own) ^ set(tensors))[:3]} differ"
        )
    for name, value in tensors.items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise InvalidArgument(
                f"adapter tensor {name} has shape {tuple(value.shape)}, not {tuple(own[name].shape)}"
            )
    set_peft_model_state_dict(model, dict(tensors))


def dp_plan_for(dp: DPConfig | DPPlan | None, *, records: int, config: TrainingConfig) -> DPPlan | None:
    """The DP-SGD plan of a run with these settings (a given plan must match them)."""
    if dp is None:
        return None
    if isinstance(dp, DPConfig):
        return plan_dp_sgd(dp, records=records, batch_size=config.batch_size, epochs=config.epochs)
    epochs = dp.steps // dp.steps_per_epoch
    if (dp.records, dp.batch_size, epochs) != (records, config.batch_size, config.epochs):
        raise InvalidArgument("the DP-SGD plan was made for other training data or settings")
    return dp


def _run_epochs(
    module: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    loss_of: Callable[[list[int]], torch.Tensor],
    *,
    records: int,
    config: TrainingConfig,
    plan: DPPlan | None,
    scheduler: Any,
    progress: TrainingProgress | None,
) -> tuple[float, DPReport | None]:
    """The training loop, plain or under DP-SGD: (running loss at the end, what DP spent)."""
    private, batches = None, _shuffled_batches(records, config.batch_size, config.seed)
    if plan is not None:
        private = PrivateTraining(module, optimiser, plan)
        optimiser, batches = private.optimiser, private.batches
    total = math.ceil(records / config.batch_size) * config.epochs
    step, running = 0, 0.0
    try:
        for _epoch in range(config.epochs):
            for idx in batches():
                optimiser.zero_grad()
                if private is not None and not idx:
                    private.noise_only_step()
                else:
                    loss = loss_of(idx)
                    if private is not None:
                        private.backward(loss)
                    else:
                        loss.backward()
                    optimiser.step()
                    value = float(loss.detach())
                    running = 0.9 * running + 0.1 * value if step > 0 else value
                if scheduler is not None:
                    scheduler.step()
                step += 1
                if progress is not None:
                    progress(step, total, running)
        return running, private.report() if private is not None else None
    finally:
        if private is not None:
            private.close()


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
    progress: TrainingProgress | None = None,
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
