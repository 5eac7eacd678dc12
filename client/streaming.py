"""Generated text as it is decoded, row by row, from one batched `generate` call.

transformers' `TextStreamer` takes a batch of one; `RowStreamer` takes any batch: `generate`
hands it every row's new token at each step (`BaseStreamer.put`), and each row's text goes to
a `GenerationSink` as soon as it is final. A row is final text up to what may still change:

* a trailing U+FFFD — a character whose UTF-8 bytes span tokens and have not all arrived;
* trailing whitespace — the answer is stripped, and the space may be its end;
* a tail that begins a stop string — it may become the stop string, which is never sent.

A row ends at an end-of-sequence token, at a stop string (the text is cut where it starts), when
the sink no longer wants it (its caller has gone), or at `max_new_tokens`; `StopRows` stops
decoding a row that ended before the batch did. The answer (`Generation`) is the
concatenation of what was sent, so a streamed answer and a whole one are the same text.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
from lmdock.client.answers import Generation, GenerationSink
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

__all__ = ["RowStreamer", "RowText", "StopRows"]

_UNFINISHED = "\ufffd"  # what a decoder writes for a character whose bytes have not all arrived


class RowText:
    """One row's tokens and the part of their text already sent."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.tokens: list[int] = []
        self.sent = ""
        self.finish = ""  # "stop" or "length" once the row has ended

    def add(self, token: int) -> str:
        """Take one token; the text that became final (the row may end here, at a stop string)."""
        self.tokens.append(token)
        text = self._decoded()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.finish = "stop"
            return self._advance(text[:cut].rstrip())
        return self._advance(_settled(text, self.stop))

    def close(self, finish: str) -> str:
        """End the row (`finish`: "stop" or "length"); the text not sent yet."""
        if not self.finish:
            self.finish = finish
            return self._advance(self._decoded().rstrip().rstrip(_UNFINISHED).rstrip())
        return ""

    def _decoded(self) -> str:
        # without clean-up, decoding is prefix-stable: more tokens only append to the text
        text = self.tokenizer.decode(
            self.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return str(text).lstrip()

    def _advance(self, final: str) -> str:
        if not final.startswith(self.sent):  # a decoder rewrote earlier text: wait for it to settle
            return ""
        delta, self.sent = final[len(self.sent) :], final
        return delta


def _settled(text: str, stop: Sequence[str]) -> str:
    """`text` less the tail that may still change (see the module's docstring)."""
    held = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    return text[: len(text) - held].rstrip(_UNFINISHED).rstrip()


class RowStreamer(BaseStreamer):
    """Streams each row of a batch to `sink` (rows numbered from `offset`) and collects the answers."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        eos_ids: Collection[int],
        stop: Sequence[str],
        prompt_tokens: Sequence[int],
        sink: GenerationSink,
        offset: int = 0,
    ) -> None:
        self.eos_ids = eos_ids
        self.prompt_tokens = list(prompt_tokens)
        self.sink = sink
        self.offset = offset
        self.rows = [RowText(tokenizer, stop) for _ in self.prompt_tokens]

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:  # `generate` hands over the prompts first, as a 2-D tensor
            return
        for i, token in enumerate(value.tolist()):
            row = self.rows[i]
            if row.finish:  # a finished row is padded from here on
                continue
            if not self.sink.wanted(self.offset + i):  # its caller has gone
                self._close(i, "stop")
                continue
            if token in self.eos_ids:
                self._close(i, "stop")
                continue
            delta = row.add(token)
            if delta:
                self.sink.text(self.offset + i, delta)
            if row.finish:
                self._done(i)

    def end(self) -> None:
        for i, row in enumerate(self.rows):
            if not row.finish:
                self._close(i, "length")

    @property
    def finished(self) -> list[bool]:
        return [bool(row.finish) for row in self.rows]

    def results(self) -> list[Generation]:
        return [self._generation(i) for i in range(len(self.rows))]

    def _close(self, i: int, finish: str) -> None:
        delta = self.rows[i].close(finish)
        if delta:
            self.sink.text(self.offset + i, delta)
        self._done(i)

    def _done(self, i: int) -> None:
        self.sink.done(self.offset + i, self._generation(i))

    def _generation(self, i: int) -> Generation:
        row = self.rows[i]
        return Generation(row.sent, self.prompt_tokens[i], len(row.tokens), row.finish)


class StopRows(StoppingCriteria):
    """Stops decoding the rows that have ended (a step late: `generate` streams after it asks)."""

    def __init__(self, streamer: RowStreamer) -> None:
        self.streamer = streamer

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.tensor(self.streamer.finished, dtype=torch.bool, device=input_ids.device)
