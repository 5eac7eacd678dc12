"""Local inference: one base model in memory serving several PEFT adapters.

* `SharedBase` loads a base model once and attaches adapters to it with peft's
  `load_adapter`; a call runs under a lock with its adapter selected (`set_adapter`), or, for
  generation prompts of several adapters, one batch with each row's own (`adapter_names`).
* classification learnwares (encoder + LoRA + trained head) answer with a label and the
  softmax score of every label; generation learnwares (causal LM + LoRA) continue prompts,
  greedily unless a temperature is given, each row's text streamed as it is decoded
  (`lmdock.client.streaming`).
* `load_learnware` is the one-adapter case used by `lmdock run`;
  `zero_shot_classify` is the base model's own answer, the baseline a learnware must beat:
  each text goes to the label whose name embeds closest (mean-pooled, cosine).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lmdock.client.answers import NO_SINK, Classification, Generation, GenerationOptions, GenerationSink
from lmdock.client.device import pick_device, pick_dtype
from lmdock.client.embedder import mean_pool
from lmdock.client.heads import classification_logits
from lmdock.client.models import resolve_base_model
from lmdock.client.prompts import chat_prompt, has_chat_template, instruction_prompt
from lmdock.client.streaming import RowStreamer, StopRows
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import TaskInfo
from peft import PeftModel
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    StoppingCriteriaList,
)

__all__ = [
    "Classification",
    "Generation",
    "GenerationOptions",
    "LoadedLearnware",
    "SharedBase",
    "load_learnware",
    "zero_shot_classify",
]


class SharedBase:
    """A base model shared by adapters of one task kind (and, for classifiers, one label count).

    Classifier heads are saved with each adapter (`modules_to_save`), so heads with different
    label counts cannot share a base; callers group learnwares by `SharedBase.key_for`.
    """

    def __init__(
        self,
        base_model: str,
        *,
        kind: str,
        num_labels: int = 0,
        device: str = "auto",
        dtype: str = "auto",
        max_input_tokens: int = 512,
    ) -> None:
        folder = resolve_base_model(base_model)
        self.base_model = base_model
        self.kind = kind
        self.num_labels = num_labels
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if kind == "classification":
            self._base = AutoModelForSequenceClassification.from_pretrained(
                folder, num_labels=num_labels, dtype=self.dtype
            )
        else:
            # Prompts are padded and truncated on the left, so every row ends where generation starts.
            self.tokenizer.padding_side = "left"
            self.tokenizer.truncation_side = "left"
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self._base = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype)
        self._base.to(self.device).eval()
        # Longer prompts are cut, never read past the model's own positions (a BERT has 512).
        self.max_positions = _position_limit(self._base, self.tokenizer, default=max_input_tokens)
        self.max_input_tokens = min(max_input_tokens, self.max_positions)
        self._eos_ids = _eos_ids(self._base, self.tokenizer)
        self._model: Any = None  # the PeftModel, once the first adapter is attached
        self._adapters: dict[str, tuple[str, TaskInfo]] = {}  # learnware name -> (peft name, task)
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    @staticmethod
    def key_for(base_model: str, task: TaskInfo) -> tuple[str, str, int]:
        return (base_model, task.kind, len(task.labels) if task.kind == "classification" else 0)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.base_model, self.kind, self.num_labels)

    @property
    def names(self) -> list[str]:
        return sorted(self._adapters)

    @property
    def peft_model(self) -> Any:
        """The base with its adapters (None until the first `add`)."""
        return self._model

    def add(self, name: str, adapter_dir: Path, task: TaskInfo) -> None:
        """Attach the adapter in `adapter_dir` (PEFT format) under `name`."""
        if self.key_for(self.base_model, task) != self.key:
            raise InvalidArgument(f"learnware {name!r} does not fit base {self.key}")
        with self._lock:
            if name in self._adapters:
                return
            # peft adapter names become module keys: no dots, so number them.
            peft_name = f"adapter{next(self._numbers)}"
            if self._model is None:
                self._model = PeftModel.from_pretrained(
                    self._base, adapter_dir, adapter_name=peft_name, torch_device=str(self.device)
                ).eval()
            else:
                self._model.load_adapter(adapter_dir, adapter_name=peft_name, torch_device=str(self.device))
            self._adapters[name] = (peft_name, task)

    def remove(self, name: str) -> None:
        """Detach an adapter; the base stays loaded (drop the SharedBase to free it)."""
        with self._lock:
            peft_name, _ = self._adapters.pop(name)
            if self._adapters:
                self._model.delete_adapter(peft_name)

    @contextlib.contextmanager
    def selected(self, name: str | None) -> Iterator[Any]:
        """The model with adapter `name` active (None: the base alone), held under the lock."""
        with self._lock:
            if name is not None:
                self._task(name, self.kind)
            if self._model is None:
                yield self._base
            elif name is None:
                with self._model.disable_adapter():
                    yield self._model
            else:
                self._select(name)
                yield self._model

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        return chat_prompt(self.tokenizer, messages)

    @torch.inference_mode()
    def classify(self, name: str, texts: Sequence[str], *, batch_size: int = 32) -> list[Classification]:
        out: list[Classification] = []
        with self._lock:  # checked under it: a concurrent `remove` cannot slip in between
            task = self._task(name, "classification")
            self._select(name)
            for start in range(0, len(texts), batch_size):
                batch = self._encode(texts[start : start + batch_size])
                logits = classification_logits(self._model, batch, task.pooling)
                probabilities = logits.float().softmax(-1).cpu()
                prompt_tokens = batch["attention_mask"].sum(-1).tolist()
                for row, used in zip(probabilities.tolist(), prompt_tokens, strict=True):
                    best = max(range(len(row)), key=row.__getitem__)
                    scores = dict(zip(task.labels, row, strict=True))
                    out.append(Classification(task.labels[best], scores, used))
        return out

    @torch.inference_mode()
    def generate(
        self,
        names: str | Sequence[str],
        prompts: Sequence[str],
        options: GenerationOptions,
        *,
        batch_size: int = 8,
        sink: GenerationSink = NO_SINK,
    ) -> list[Generation]:
        """One answer per prompt, from adapter `names` (one for all, or one per prompt); `sink` gets
        each row's text as it is decoded (rows: prompt positions).

        Prompts for different adapters share batches: PEFT runs the frozen base once for the whole
        batch and each LoRA only on its own rows (`adapter_names`), so interleaved learnwares cost
        about what one does.
        """
        per_row = [names] * len(prompts) if isinstance(names, str) else list(names)
        if len(per_row) != len(prompts):
            raise InvalidArgument(f"{len(per_row)} adapter names for {len(prompts)} prompts")
        out: list[Generation] = []
        with self._lock:  # checked under it: a concurrent `remove` cannot slip in between
            used = sorted(set(per_row))
            for name in used:
                self._task(name, "generation")
            mixed = len(used) > 1
            if len(used) == 1:
                self._select(used[0])
            for start in range(0, len(prompts), batch_size):
                rows = slice(start, start + batch_size)
                adapters = [self._adapters[n][0] for n in per_row[rows]] if mixed else None
                out.extend(self._generate_batch(prompts[rows], options, sink, start, adapters))
        return out

    def _generate_batch(
        self,
        prompts: Sequence[str],
        options: GenerationOptions,
        sink: GenerationSink,
        offset: int,
        adapters: list[str] | None,
    ) -> list[Generation]:
        # the caller's max_new_tokens is kept, cutting the prompt; a default one gives way to it
        batch = self._encode(prompts, room=1 if options.fit else options.max_new_tokens)
        max_new_tokens = options.max_new_tokens
        if options.fit:
            max_new_tokens = max(1, min(max_new_tokens, self.max_positions - batch["input_ids"].shape[1]))
        sampling: dict[str, Any] = {"do_sample": False}
        if options.temperature > 0:
            sampling = {"do_sample": True, "temperature": options.temperature, "top_p": options.top_p}
        streamer = RowStreamer(
            self.tokenizer,
            eos_ids=self._eos_ids,
            stop=options.stop,
            prompt_tokens=batch["attention_mask"].sum(-1).tolist(),
            sink=sink,
            offset=offset,
        )
        self._model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([StopRows(streamer)]),
            **({} if adapters is None else {"adapter_names": adapters}),
            **sampling,
        )
        return streamer.results()

    def _encode(self, texts: Sequence[str], *, room: int = 0) -> Any:
        """Token ids of `texts`, each cut to leave `room` positions for generated tokens."""
        for text in texts:
            _check_encodable(text)
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max(1, min(self.max_input_tokens, self.max_positions - room)),
            return_tensors="pt",
            return_token_type_ids=self.kind == "classification",
            # a chat template writes its own special tokens (`lmdock.client.prompts`)
            add_special_tokens=self.kind == "classification" or not has_chat_template(self.tokenizer),
        ).to(self.device)

    def _task(self, name: str, kind: str) -> TaskInfo:
        if name not in self._adapters:
            raise InvalidArgument(f"learnware {name!r} is not loaded on base {self.base_model!r}")
        task = self._adapters[name][1]
        if task.kind != kind:
            raise InvalidArgument(f"learnware {name!r} does {task.kind}, not {kind}")
        return task

    def _select(self, name: str) -> None:
        self._model.set_adapter(self._adapters[name][0])


def _position_limit(model: Any, tokenizer: Any, *, default: int) -> int:
    """The most tokens `model` reads: its position table, or what its tokenizer says it takes."""
    stated = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    # tokenizers without a stated maximum give a huge placeholder (1e30)
    return min((n for n in stated if isinstance(n, int) and 0 < n < 10**7), default=default)


def _check_encodable(text: str) -> None:
    """Tokenizers take only valid Unicode; JSON can still carry an unpaired surrogate ("\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(
            "a prompt holds an unpaired surrogate (a \\ud800-\\udfff escape): send valid Unicode text"
        ) from None


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Tokens that end a generation: the model's generation config, else the tokenizer's."""
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return frozenset()
    return frozenset([ids] if isinstance(ids, int) else ids)


@dataclass
class LoadedLearnware:
    """One learnware on its own base model (what `lmdock run` uses)."""

    host: SharedBase
    name: str
    task: TaskInfo

    @property
    def model(self) -> Any:
        """The PeftModel (e.g. for `with loaded.model.disable_adapter():`, the base alone)."""
        return self.host.peft_model

    @property
    def tokenizer(self) -> Any:
        return self.host.tokenizer

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
            allowed = [name for name in self.task.labels if labels is None or name in labels]
            if not allowed:
                raise InvalidArgument(f"the learnware answers none of the labels {sorted(labels or [])[:5]}")
            answers = self.host.classify(self.name, texts, batch_size=batch_size)
            return [max(allowed, key=answer.scores.__getitem__) for answer in answers]
        options = GenerationOptions(max_new_tokens=max_new_tokens)
        prompts = [instruction_prompt(self.tokenizer, text) for text in texts]
        return [g.text for g in self.host.generate(self.name, prompts, options, batch_size=batch_size)]


def load_learnware(
    adapter_dir: Path,
    *,
    base_model: str,
    task: TaskInfo,
    device: str = "auto",
    dtype: str = "float32",
    max_input_tokens: int = 128,
) -> LoadedLearnware:
    """Base model (from local files) + the adapter in `adapter_dir`, ready for `predict`."""
    _, kind, num_labels = SharedBase.key_for(base_model, task)
    host = SharedBase(
        base_model,
        kind=kind,
        num_labels=num_labels,
        device=device,
        dtype=dtype,
        max_input_tokens=max_input_tokens,
    )
    host.add("learnware", adapter_dir, task)
    return LoadedLearnware(host=host, name="learnware", task=task)


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
