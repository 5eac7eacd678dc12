"""A Llama-style decoder run in two parts: lower layers [0, split) and upper layers [split, L).

An adapter on the top `L - split` layers only (`TrainingConfig.layers`) leaves the lower
layers frozen and unadapted, so their output for a token sequence never changes: it can be
computed once and reused, by every epoch of a training run (`objectives.TaskModel`) and by
every top-layer adapter scored on the same questions (`lmdock.lab.loglik`). Batches are
right-padded; a real token attends only to the real tokens before it, so a sequence's lower
activations do not depend on the batch they were computed in, and batches can be re-formed
from cached rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.masking_utils import create_causal_mask

__all__ = ["Frame", "LayerSplit"]


@dataclass(frozen=True)
class Frame:
    """What every layer call of a right-padded batch needs besides its hidden states."""

    mask: Any
    positions: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor]


class LayerSplit:
    """`model` (a causal LM, peft-wrapped or not) as lower layers [0, split) and upper [split, L)."""

    def __init__(self, model: Any, split: int) -> None:
        self.decoder = model.get_decoder()
        self.split = split
        self.device = self.decoder.embed_tokens.weight.device
        if not 0 <= split <= len(self.decoder.layers):
            raise ValueError(f"split {split} outside the model's {len(self.decoder.layers)} layers")

    def embed(
        self,
        ids: Sequence[Sequence[int]],
        *,
        pad_id: int,
        positions: Sequence[Sequence[int]] | None = None,
        segments: Sequence[Sequence[int]] | None = None,
    ) -> tuple[torch.Tensor, Frame]:
        """The token embeddings of a right-padded batch, and its frame (see `frame`)."""
        width = max(len(x) for x in ids)
        tokens = torch.tensor([list(x) + [pad_id] * (width - len(x)) for x in ids], device=self.device)
        hidden = self.decoder.embed_tokens(tokens)
        return hidden, self.frame(hidden, [len(x) for x in ids], positions=positions, segments=segments)

    def frame(
        self,
        hidden: torch.Tensor,
        lengths: Sequence[int],
        *,
        positions: Sequence[Sequence[int]] | None = None,
        segments: Sequence[Sequence[int]] | None = None,
    ) -> Frame:
        """The causal mask, positions and rotary embeddings of a batch of these `lengths`.

        Packed sequences (e.g. one prompt followed by several continuations) give each token's
        `positions` and `segments`: a token sees the earlier tokens of segment 0 and of its own
        segment only. Without them, positions count from 0 and every token sees all before it.
        """
        width = hidden.shape[1]
        device = hidden.device
        attention = torch.tensor([[1] * n + [0] * (width - n) for n in lengths], device=device)
        position_ids = torch.arange(width, device=device).unsqueeze(0)
        same_segment = None
        if positions is not None:
            position_ids = torch.tensor([list(p) + [0] * (width - len(p)) for p in positions], device=device)
        if segments is not None:
            seg = torch.tensor([list(s) + [0] * (width - len(s)) for s in segments], device=device)

            def same_segment(batch: Any, head: Any, q: Any, kv: Any) -> Any:
                return (seg[batch, kv] == 0) | (seg[batch, kv] == seg[batch, q])

        mask = create_causal_mask(
            config=self.decoder.config,
            inputs_embeds=hidden,
            attention_mask=attention,
            cache=None,
            position_ids=position_ids,
            and_mask_function=same_segment,
        )
        return Frame(mask, position_ids, self.decoder.rotary_emb(hidden, position_ids=position_ids))

    def lower(self, hidden: torch.Tensor, frame: Frame) -> torch.Tensor:
        return self._layers(hidden, frame, self.decoder.layers[: self.split])

    def upper(self, hidden: torch.Tensor, frame: Frame) -> torch.Tensor:
        """The upper layers and the final norm: what the output embedding reads."""
        return self.decoder.norm(self._layers(hidden, frame, self.decoder.layers[self.split :]))

    def _layers(self, hidden: torch.Tensor, frame: Frame, layers: Any) -> torch.Tensor:
        for layer in layers:
            hidden = layer(
                hidden,
                attention_mask=frame.mask,
                position_embeddings=frame.rotary,
                position_ids=frame.positions,
            )
        return hidden
