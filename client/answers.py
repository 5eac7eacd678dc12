"""What a local model answers, and how to ask it: plain records, free of torch.

`lmdock.client.runtime` computes them; the daemon's APIs and clients pass them around (and the
command line imports them without loading any model library).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Classification", "Generation", "GenerationOptions"]


@dataclass(frozen=True)
class Classification:
    label: str
    scores: dict[str, float]  # softmax probability of every label
    prompt_tokens: int = 0  # input tokens read (after truncation), for usage reports


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop": end of sequence or a stop string; "length": hit max_new_tokens


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy decoding
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
