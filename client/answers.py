"""What a local model answers, and how to ask it: plain records, free of torch.

`lmdock.client.runtime` computes them; the daemon's APIs and clients pass them around (and the
command line imports them without loading any model library).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "NO_SINK",
    "Classification",
    "Generation",
    "GenerationOptions",
    "GenerationSink",
    "TextListener",
]


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
    # max_new_tokens is a default, not the caller's: fewer when the prompt leaves less room
    fit: bool = False


class GenerationSink(Protocol):
    """Where generated text goes while it is decoded; `row` is the prompt's position in the call.

    Called from the thread that runs the model: `text` with each piece of final text, in order,
    then `done` once with the row's answer (whose text is those pieces joined).
    """

    def text(self, row: int, delta: str) -> None: ...

    def done(self, row: int, generation: Generation) -> None: ...

    def wanted(self, row: int) -> bool:
        """False once nobody reads the row any more: it stops decoding."""
        ...


class TextListener(Protocol):
    """One caller reading its answer as it is generated: (prompt's index, text) pieces."""

    def __call__(self, index: int, delta: str) -> None: ...

    @property
    def listening(self) -> bool:
        """False once the caller has gone."""
        ...


class _NoSink:
    def text(self, row: int, delta: str) -> None:
        pass

    def done(self, row: int, generation: Generation) -> None:
        pass

    def wanted(self, row: int) -> bool:
        return True


NO_SINK: GenerationSink = _NoSink()  # for callers that want only the answers
