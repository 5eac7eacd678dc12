"""Log-likelihood scoring of a causal LM, lm-evaluation-harness style, at CPU cost.

Every question put to the model is a token sequence and the (position, token) pairs to read:
log p(token | the sequence before position + 1). Three kinds of question are built on that:

* `choice_questions`: log p(choice | prompt) for each of a closed set of choices, one forward
  pass per prompt. When every choice is one token (letters, yes/no, ...), the next-token
  distribution after the prompt reads them all; otherwise the prompt is packed with every
  choice after it, each choice seeing the prompt and its own earlier tokens only (a segment
  mask, positions restarting after the prompt), and a choice's log-likelihood is the sum over
  its tokens (the harness's `acc`, unnormalised): what one sequence per choice gives, with the
  prompt run once instead of once per choice.
* `gold_logprobs`: the per-token log-likelihoods of a gold continuation (teacher-forced).
* the vocabulary projection runs only at the positions read, never over the whole sequence
  (at 49k tokens it costs as much as several layers).

`SplitModel` runs the decoder in two parts (`lmdock.client.training.layer_split`): the lower
layers once (no adapter touches them, they are frozen), and the upper layers once per adapter
on the cached lower activations, so scoring k top-layer adapters costs lower + k * upper
instead of k * (lower + upper).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from lmdock.client.training.layer_split import Frame, LayerSplit

__all__ = [
    "Lower",
    "Question",
    "SplitModel",
    "batches",
    "choice_questions",
    "gold_questions",
    "read_choices",
    "read_gold",
]

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Question:
    ids: tuple[int, ...]
    reads: tuple[tuple[int, int], ...]  # (position whose output is read, token whose log p is taken)
    #: A packed question: each token's position and segment (0 = the shared prompt; a token of
    #: segment j > 0 sees the prompt and segment j's earlier tokens only). Empty: one sequence.
    positions: tuple[int, ...] = ()
    segments: tuple[int, ...] = ()


def _continuation(prompt: Sequence[int], answer: Sequence[int]) -> Question:
    ids = (*prompt, *answer)
    return Question(ids, tuple((len(prompt) - 1 + j, t) for j, t in enumerate(answer)))


def _packed(prompt: Sequence[int], choices: Sequence[Sequence[int]]) -> Question:
    """The prompt once, then every choice after it, each attending to the prompt and itself:
    the same log-likelihoods as one sequence per choice, the prompt's cost paid once."""
    ids, positions, segments, reads = list(prompt), list(range(len(prompt))), [0] * len(prompt), []
    for j, choice in enumerate(choices, start=1):
        for t, token in enumerate(choice):
            reads.append((len(prompt) - 1 if t == 0 else len(ids) - 1, token))
            ids.append(token)
            positions.append(len(prompt) + t)
            segments.append(j)
    return Question(tuple(ids), tuple(reads), tuple(positions), tuple(segments))


def choice_questions(prompts: Sequence[Sequence[int]], choices: Sequence[Sequence[int]]) -> list[Question]:
    """One question per prompt: the next-token distribution when every choice is a single
    distinct token, else the prompt packed with all its choices (`_packed`)."""
    firsts = [c[0] for c in choices if len(c) == 1]
    if len(firsts) == len(choices) and len(set(firsts)) == len(firsts):
        return [Question(tuple(p), tuple((len(p) - 1, t) for t in firsts)) for p in prompts]
    return [_packed(p, choices) for p in prompts]


def read_choices(answers: Sequence[Floats], choices: Sequence[Sequence[int]]) -> Floats:
    """(prompts, choices) log-likelihoods, each summed over its tokens, from what
    `choice_questions`' questions returned (its reads are the choices' tokens in order)."""
    ends = np.cumsum([len(c) for c in choices])
    return np.array([[part.sum() for part in np.split(a, ends[:-1])] for a in answers])


def gold_questions(prompts: Sequence[Sequence[int]], golds: Sequence[Sequence[int]]) -> list[Question]:
    return [_continuation(p, g) for p, g in zip(prompts, golds, strict=True)]


def read_gold(answers: Sequence[Floats]) -> Floats:
    """Per example: exp(mean token log-likelihood) of the gold continuation, in (0, 1]."""
    return np.array([float(np.exp(a.mean())) for a in answers])


@dataclass
class Lower:
    """A batch's activations after the lower layers, ready for any adapter's upper layers."""

    hidden: torch.Tensor
    frame: Frame
    questions: Sequence[Question]


class SplitModel:
    """A Llama-style causal LM (peft-wrapped or not) run as lower layers [0, split) and upper [split, L)."""

    def __init__(self, model: Any, split: int, *, pad_id: int) -> None:
        self.layers = LayerSplit(model, split)
        self.head = model.get_output_embeddings()
        self.pad_id = pad_id

    @torch.inference_mode()
    def lower(self, questions: Sequence[Question]) -> Lower:
        """Embed a batch (right-padded) and run the lower layers."""
        packed = any(q.segments for q in questions)
        hidden, frame = self.layers.embed(
            [q.ids for q in questions],
            pad_id=self.pad_id,
            positions=[q.positions or tuple(range(len(q.ids))) for q in questions] if packed else None,
            segments=[q.segments or (0,) * len(q.ids) for q in questions] if packed else None,
        )
        return Lower(self.layers.lower(hidden, frame), frame, questions)

    @torch.inference_mode()
    def upper(self, lower: Lower) -> list[Floats]:
        """The upper layers (with whatever adapter is active) and each question's read log p's."""
        hidden = self.layers.upper(lower.hidden, lower.frame)
        rows = [i for i, q in enumerate(lower.questions) for _ in q.reads]
        cols = [p for q in lower.questions for p, _ in q.reads]
        tokens = torch.tensor([t for q in lower.questions for _, t in q.reads], device=hidden.device)
        logp = torch.log_softmax(self.head(hidden[rows, cols]).float(), dim=-1)
        picked = logp[torch.arange(len(tokens), device=hidden.device), tokens].double().cpu().numpy()
        out, start = [], 0
        for q in lower.questions:
            out.append(picked[start : start + len(q.reads)])
            start += len(q.reads)
        return out


def batches(questions: Sequence[Question], *, tokens: int) -> Iterator[list[Question]]:
    """Questions in order, grouped so that a batch holds about `tokens` padded tokens."""
    batch: list[Question] = []
    for q in questions:
        if batch and (len(batch) + 1) * max(len(q.ids), *(len(b.ids) for b in batch)) > tokens:
            yield batch
            batch = []
        batch.append(q)
    if batch:
        yield batch
