"""Local inference: base model + PEFT adapter, on cuda when available, else mps, else cpu.

* classification learnwares: encoder + LoRA + trained head -> one label per text;
* generation learnwares: causal LM + LoRA -> greedy continuation per prompt;
* the base model alone answers classification tasks zero-shot: each text goes to the label
  whose name embeds closest (mean-pooled, cosine), the baseline a learnware must beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lmdock.client.device import pick_device
from lmdock.client.embedder import mean_pool
from lmdock.client.models import resolve_base_model
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import TaskInfo
from peft import PeftModel
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

__all__ = ["LoadedLearnware", "load_learnware", "zero_shot_classify"]


@dataclass
class LoadedLearnware:
    task: TaskInfo
    model: Any
    tokenizer: Any
    device: torch.device
    max_tokens: int = 128

    @torch.inference_mode()
    def predict(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        max_new_tokens: int = 32,
        labels: Sequence[str] | None = None,
    ) -> list[str]:
        """One answer per text; a classifier given `labels` answers only with those of its labels."""
        if self.task.kind == "classification":
            return self._classify(texts, batch_size, labels)
        return [self._generate(t, max_new_tokens) for t in texts]

    def _classify(self, texts: Sequence[str], batch_size: int, labels: Sequence[str] | None) -> list[str]:
        allowed = torch.tensor([labels is None or name in labels for name in self.task.labels])
        if not bool(allowed.any()):
            raise InvalidArgument(f"the learnware answers none of the labels {sorted(labels or [])[:5]}")
        allowed = allowed.to(self.device)
        out: list[str] = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**batch).logits.masked_fill(~allowed, float("-inf"))
            out.extend(self.task.labels[i] for i in logits.argmax(-1).tolist())
        return out

    def _generate(self, prompt: str, max_new_tokens: int) -> str:
        batch = self.tokenizer(prompt, return_tensors="pt", return_token_type_ids=False).to(self.device)
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        generated = self.model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
        )
        new_tokens = generated[0, batch["input_ids"].shape[1] :]
        return str(self.tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()


def load_learnware(
    adapter_dir: Path, *, base_model: str, task: TaskInfo, device: str = "auto", dtype: str = "float32"
) -> LoadedLearnware:
    """Base model (from local files) + the adapter in `adapter_dir`, ready for `predict`."""
    folder = resolve_base_model(base_model)
    target = pick_device(device)
    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if task.kind == "classification":
        base = AutoModelForSequenceClassification.from_pretrained(
            folder,
            num_labels=len(task.labels),
            id2label=dict(enumerate(task.labels)),
            label2id={name: i for i, name in enumerate(task.labels)},
            dtype=torch_dtype,
        )
    else:
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
    model = PeftModel.from_pretrained(base, adapter_dir).to(target).eval()
    return LoadedLearnware(task=task, model=model, tokenizer=tokenizer, device=target)


@torch.inference_mode()
def zero_shot_classify(
    base_model: str,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    batch_size: int = 64,
    device: str = "auto",
) -> list[str]:
    """The base model's answer: the label whose name is closest to the text (cosine of mean-pooled states)."""
    folder = resolve_base_model(base_model)
    target = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).to(target).eval()

    def embed(items: Sequence[str]) -> torch.Tensor:
        parts = []
        for start in range(0, len(items), batch_size):
            batch = tokenizer(
                list(items[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            ).to(target)
            parts.append(mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]))
        return torch.cat(parts)

    label_vectors = embed([name.replace("_", " ") for name in labels])
    best = (embed(texts) @ label_vectors.T).argmax(-1).tolist()
    return [labels[i] for i in best]
