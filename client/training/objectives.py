"""What differs between the two kinds of learnware during training: the model and the loss.

* classification: an encoder (AutoModelForSequenceClassification) with LoRA on its attention
  projections and a fresh head, trained and saved with the adapter (`modules_to_save`);
  loss_i = cross-entropy of example i's label.
* generation: a causal LM (AutoModelForCausalLM) with LoRA; the prompt is the text as the
  runtime writes it (`lmdock.client.prompts`: the user's turn of the base's chat template,
  where it has one), the target the answer followed by EOS; loss_i = mean cross-entropy over
  example i's answer tokens only (prompt and padding are masked out).

The batch loss is (1/B) Σ_i loss_i, so the per-example gradients DP-SGD clips are exactly the
gradients of each example's own loss (a token-level mean over the batch would mix examples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lmdock.client.heads import check_mean_pooling, classification_logits
from lmdock.client.prompts import answer_ids, prompt_ids
from lmdock.client.training.layer_split import LayerSplit
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import TaskInfo
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

__all__ = ["LowerCache", "LowerCaches", "TaskModel", "attention_targets", "load_task_model", "top_layers"]

#: LoRA goes on the attention query/value projections; their names differ by architecture.
_ATTENTION_NAMES = (("q_proj", "v_proj"), ("query", "value"), ("q_lin", "v_lin"), ("c_attn",))
#: Task heads trained in full and saved with the adapter, where the architecture has them.
_HEAD_NAMES = ("pre_classifier", "classifier", "score", "pooler")
IGNORE = -100
#: Lower-layer activations kept per training run (float32: SmolLM2's 576 per token, ~0.7 MB for
#: a 300-token record, so ~1,500 such records).
LOWER_CACHE_BYTES = 1 << 30


def top_layers(model: Any, targets: Sequence[str], layers: int) -> list[str]:
    """The `targets` modules of the top `layers` transformer layers, by full name (all: just `targets`).

    Named one by one, not with PEFT's `layers_to_transform`: a package may choose modules only by
    name (`lmdock.common.adapter_config`), and the market refuses layer selectors.
    """
    if layers == 0:
        return list(targets)
    total = int(model.config.num_hidden_layers)
    if layers > total:
        raise InvalidArgument(f"the base model has {total} layers; cannot adapt the top {layers}")
    names = []
    for name, _ in model.named_modules():
        parts = name.split(".")
        numbers = [int(p) for p in parts if p.isdigit()]
        if parts[-1] in targets and numbers and numbers[0] >= total - layers:
            names.append(name)
    return names


def attention_targets(model: torch.nn.Module) -> tuple[str, ...]:
    """The attention projection names of `model` that LoRA should adapt."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for candidate in _ATTENTION_NAMES:
        if set(candidate) <= names:
            return candidate
    raise InvalidArgument(
        "cannot find the attention projections of this base model; name them with --target-modules"
    )


@dataclass
class TaskModel:
    """A base model with a fresh LoRA adapter, and the per-example loss of its task.

    With an adapter on the top layers only (`split`), a generative model keeps each sequence's
    lower-layer activations (`LowerCache`): every epoch after the first runs the upper layers alone.
    """

    task: TaskInfo
    model: Any  # peft.PeftModel
    tokenizer: Any
    max_tokens: int
    eos_id: int | None = None
    split: LayerSplit | None = None
    lower_cache: LowerCache = field(default_factory=lambda: LowerCache(LOWER_CACHE_BYTES))

    @property
    def device(self) -> torch.device:
        """Where the model's weights are, so where its inputs go."""
        return self.model.get_input_embeddings().weight.device

    def loss(self, texts: Sequence[str], targets: Sequence[str]) -> torch.Tensor:
        """(1/B) Σ_i loss_i over the batch (see the module docstring)."""
        if self.task.kind == "classification":
            return self._classification_loss(texts, targets)
        return self._generation_loss(texts, targets)

    def _classification_loss(self, texts: Sequence[str], labels: Sequence[str]) -> torch.Tensor:
        index = {name: i for i, name in enumerate(self.task.labels)}
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        logits = classification_logits(self.model, batch, self.task.pooling)
        target = torch.tensor([index[y] for y in labels], device=logits.device)
        return torch.nn.functional.cross_entropy(logits.float(), target)

    def _generation_loss(self, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        ids: list[list[int]] = []
        labels = []
        end = [self.eos_id] if self.eos_id is not None else []
        for prompt, answer in zip(prompts, answers, strict=True):
            # the prompt is tokenized exactly as the runtime does before generating
            p = prompt_ids(self.tokenizer, prompt, max_tokens=self.max_tokens)
            a = answer_ids(self.tokenizer, answer)[: self.max_tokens] + end
            ids.append(p + a)
            labels.append([IGNORE] * len(p) + a)
        return self._predicted_loss(ids, labels)

    def text_loss(self, texts: Sequence[str]) -> torch.Tensor:
        """(1/B) Σ_i of the mean next-token loss over text i's first `max_tokens` tokens, as they
        stand (no prompt, no template): what a task vector learns (`training.task_vector`)."""
        ids = [
            list(self.tokenizer(t, add_special_tokens=False)["input_ids"])[: self.max_tokens]
            or [self.eos_id or 0]
            for t in texts
        ]
        return self._predicted_loss(ids, ids)

    def _predicted_loss(self, ids: list[list[int]], labels: list[list[int]]) -> torch.Tensor:
        """(1/B) Σ_i mean cross-entropy of example i's tokens whose label is not IGNORE."""
        hidden = self._final_hidden(ids)
        width = max(map(len, ids))
        target = torch.tensor([y + [IGNORE] * (width - len(y)) for y in labels], device=hidden.device)[:, 1:]
        # The vocabulary projection only where an answer token is predicted: prompts are most of
        # the tokens, and at 49k words the head costs several layers per position it runs at.
        read = target != IGNORE  # token t predicts token t + 1
        # In float32 whatever the model's dtype: a bfloat16 log-softmax over 49k words loses the loss.
        logits = self.model.get_output_embeddings()(hidden[:, :-1][read]).float()
        per_token = torch.nn.functional.cross_entropy(logits, target[read], reduction="none")
        rows = read.nonzero()[:, 0]
        per_example = torch.zeros(len(ids), dtype=per_token.dtype, device=hidden.device)
        per_example = per_example.index_add(0, rows, per_token)
        return (per_example / read.sum(dim=1).clamp(min=1)).mean()

    def _final_hidden(self, ids: list[list[int]]) -> torch.Tensor:
        """The decoder's last hidden states of the right-padded batch `ids`."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id or 0
        if self.split is None:
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self.device)
            return self.model.get_decoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state
        keys = [tuple(x) for x in ids]
        missing = list(dict.fromkeys(k for k in keys if k not in self.lower_cache))
        computed: dict[tuple[int, ...], torch.Tensor] = {}
        if missing:
            with torch.no_grad():  # frozen, unadapted layers: nothing to train below the split
                hidden, frame = self.split.embed(missing, pad_id=pad)
                lower = self.split.lower(hidden, frame)
            computed = {k: lower[i, : len(k)] for i, k in enumerate(missing)}
            for k, done in computed.items():
                self.lower_cache.put(k, done)
        rows = [computed[k] if k in computed else self.lower_cache[k] for k in keys]
        hidden = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        return self.split.upper(hidden, self.split.frame(hidden, [len(k) for k in keys]))


class LowerCache:
    """Lower-layer activations by token sequence, up to `max_bytes` (then new ones are not kept:
    they are recomputed each time, which costs time, never a different result)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used = max_bytes, 0
        self._rows: dict[tuple[int, ...], torch.Tensor] = {}

    def __contains__(self, key: tuple[int, ...]) -> bool:
        return key in self._rows

    def __getitem__(self, key: tuple[int, ...]) -> torch.Tensor:
        return self._rows[key]

    def put(self, key: tuple[int, ...], rows: torch.Tensor) -> None:
        size = rows.numel() * rows.element_size()
        if self.used + size <= self.max_bytes:
            self._rows[key] = rows.clone()  # not a view that would keep the whole batch alive
            self.used += size


class LowerCaches:
    """`LowerCache`s shared by training runs, one for each set of frozen lower layers (base
    folder, split, dtype, device): versions of one data set train on most of the same records,
    and the same unadapted lower layers give the same rows for the same tokens (to float rounding:
    another run computed them in other batch shapes), so a later version reads what an earlier
    one computed. Each cache holds up to `max_bytes`."""

    def __init__(self, max_bytes: int = LOWER_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._caches: dict[tuple[str, ...], LowerCache] = {}

    def of(self, *lower_layers: object) -> LowerCache:
        key = tuple(str(x) for x in lower_layers)
        if key not in self._caches:
            self._caches[key] = LowerCache(self.max_bytes)
        return self._caches[key]


def _check_plain_head(config: Any) -> None:
    """The answer loss applies the output embedding itself (`TaskModel._generation_loss`): a
    model that transforms its logits after it would train on other logits than it generates from."""
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", 1.0) != 1.0:
        raise InvalidArgument(
            f"training adapters for {config.model_type!r} models is not supported: their logits are "
            "scaled or capped after the output layer"
        )


def load_task_model(
    folder: Path,
    task: TaskInfo,
    *,
    base_model: str,
    max_tokens: int,
    rank: int,
    alpha: int,
    dropout: float,
    target_modules: Sequence[str] = (),
    layers: int = 0,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    lower_caches: LowerCaches | None = None,
) -> TaskModel:
    """The base model in `folder` with a fresh LoRA adapter for `task` (only LoRA and heads train).

    A mean-pooled classifier (`task.pooling == "mean"`) keeps only `classifier` as its head:
    the [CLS] pooler is not used (see `lmdock.client.heads`). `layers` > 0 puts LoRA on the top
    `layers` layers only. The base is loaded in `dtype` on `device` (None: the cpu); PEFT keeps
    the LoRA weights in float32 (`autocast_adapter_dtype`), so a bfloat16 base trains float32 LoRA.
    A top-layer generative adapter keeps its lower-layer activations in `lower_caches` (shared
    with the other runs given it) or in a cache of its own.
    """
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if task.kind == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(
            folder,
            num_labels=len(task.labels),
            id2label=dict(enumerate(task.labels)),
            label2id={name: i for i, name in enumerate(task.labels)},
            dtype=dtype,
        )
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        heads = [name for name in _HEAD_NAMES if name in present]
        if task.pooling == "mean":
            check_mean_pooling(model)
            heads = ["classifier"]
        task_type = TaskType.SEQ_CLS
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        _check_plain_head(model.config)
        heads, task_type = [], TaskType.CAUSAL_LM
        tokenizer.truncation_side = "left"  # as the runtime: a long prompt keeps its end
    lora = LoraConfig(
        task_type=task_type,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=top_layers(model, target_modules or attention_targets(model), layers),
        modules_to_save=heads or None,
    )
    on = device or torch.device("cpu")
    peft_model = get_peft_model(model.to(on), lora)
    peft_model.peft_config["default"].base_model_name_or_path = base_model
    split = None
    # Lower activations are reused only where the lower layers are deterministic (no dropout).
    if task.kind == "generation" and layers and not getattr(model.config, "attention_dropout", 0.0):
        split = LayerSplit(peft_model, int(model.config.num_hidden_layers) - layers)
    eos = model.config.eos_token_id
    eos_id = eos[0] if isinstance(eos, list) else eos
    if eos_id is None:
        eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    lower_cache = (
        LowerCache(LOWER_CACHE_BYTES)
        if lower_caches is None or split is None
        else lower_caches.of(Path(folder).resolve(), split.split, dtype, on)
    )
    return TaskModel(
        task=task,
        model=peft_model,
        tokenizer=tokenizer,
        max_tokens=max_tokens,
        eos_id=eos_id,
        split=split,
        lower_cache=lower_cache,
    )
