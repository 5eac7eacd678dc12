"""LoRA fine-tuning of a learnware's adapter with peft (a plain torch loop, CPU-friendly).

Classification learnwares put LoRA (rank r) on the attention query/value projections of an
encoder and train a fresh classification head, saved with the adapter (`modules_to_save`).
The adapter folder holds adapter_config.json + adapter_model.safetensors, nothing else.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from lmdock.client.models import resolve_base_model
from lmdock.common.errors import InvalidArgument
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

__all__ = ["ClassifierTraining", "tidy_adapter_folder", "train_classifier"]

Progress = Callable[[int, int, float], None]  # step, total steps, running loss


@dataclass(frozen=True)
class ClassifierTraining:
    epochs: int = 3
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_tokens: int = 64
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    seed: int = 0
    target_modules: tuple[str, ...] = ("query", "value")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def train_classifier(
    *,
    base_model: str,
    texts: Sequence[str],
    labels: Sequence[str],
    label_names: Sequence[str],
    out_dir: Path,
    config: ClassifierTraining = ClassifierTraining(),
    progress: Progress | None = None,
) -> dict[str, float]:
    """Train and save a LoRA classification adapter; returns {"seconds", "final_loss"}."""
    if len(texts) != len(labels) or not texts:
        raise InvalidArgument("need as many labels as texts, and at least one of each")
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise InvalidArgument(f"labels not in the label set: {unknown[:5]}")
    _seed_everything(config.seed)
    folder = resolve_base_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id=index,
    )
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        modules_to_save=["classifier", "pooler"],
    )
    model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate)
    y = torch.tensor([index[label] for label in labels])
    order = list(range(len(texts)))
    steps_per_epoch = math.ceil(len(texts) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 1.0 - s / max(total, 1))
    rng = random.Random(config.seed)
    started, step, running = time.perf_counter(), 0, 0.0
    for _epoch in range(config.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=config.max_tokens,
                return_tensors="pt",
            )
            loss = model(**batch, labels=y[idx]).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            step += 1
            value = float(loss.detach())
            running = 0.9 * running + 0.1 * value if step > 1 else value
            if progress is not None:
                progress(step, total, running)
    model.peft_config["default"].base_model_name_or_path = base_model
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tidy_adapter_folder(out_dir)
    return {"seconds": time.perf_counter() - started, "final_loss": running}


def tidy_adapter_folder(out_dir: Path) -> None:
    """Keep the adapter folder to exactly the two files of the package format."""
    for path in out_dir.iterdir():
        if path.name not in ("adapter_config.json", "adapter_model.safetensors"):
            path.unlink()
    config = json.loads((out_dir / "adapter_config.json").read_text())
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
