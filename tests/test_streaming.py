"""Per-row streaming of a batch (`lmdock.client.streaming`) on a real byte-level BPE tokenizer.

Byte-level BPE (SmolLM2's, Qwen's, GPT-2's kind) splits a character's UTF-8 bytes across
tokens, so a naive streamer sends U+FFFD; rows are fed one token per step, as `generate` does.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lmdock.client.answers import Generation
from lmdock.client.streaming import RowStreamer, StopRows
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

TEXTS = ["naïve café, 漢字 and 🙂 fine", "alpha beta STOP gamma delta"]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<eos>"]
    )
    bpe.train_from_iterator(["alpha beta gamma", "the end of it"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<eos>")


class Recorder:
    """A sink that keeps what it is given."""

    def __init__(self, leaves: dict[int, int] | None = None) -> None:
        self.pieces: dict[int, list[str]] = {}
        self.answers: dict[int, Generation] = {}
        self.leaves = leaves or {}  # row -> pieces after which its reader goes
        self.stopped_at_step_8: list[bool] = []  # what `StopRows` said then

    def text(self, row: int, delta: str) -> None:
        assert row not in self.answers, "text after the row was done"
        self.pieces.setdefault(row, []).append(delta)

    def done(self, row: int, generation: Generation) -> None:
        assert row not in self.answers, "done twice"
        self.answers[row] = generation

    def wanted(self, row: int) -> bool:
        return len(self.pieces.get(row, [])) < self.leaves.get(row, 10**9)


def _feed(
    tokenizer: Any, rows: list[list[int]], sink: Recorder | None = None, **kwargs: Any
) -> tuple[RowStreamer, Recorder]:
    """Rows fed step by step as `generate` does: prompts (2-D) first, then one token per row, padded."""
    sink = sink or Recorder()
    streamer = RowStreamer(tokenizer, eos_ids={tokenizer.eos_token_id}, sink=sink, **kwargs)
    streamer.put(torch.zeros((len(rows), 3), dtype=torch.long))
    for step in range(max(map(len, rows))):
        pad = tokenizer.eos_token_id
        streamer.put(torch.tensor([row[step] if step < len(row) else pad for row in rows]))
        if step == 8:  # what `generate` asks before its next step
            stopped = StopRows(streamer)(torch.zeros((len(rows), 1), dtype=torch.long), torch.zeros(1))
            sink.stopped_at_step_8 = stopped.tolist()
    streamer.end()
    return streamer, sink


def test_each_row_streams_whole_characters_and_ends_with_its_answer(tokenizer: Any) -> None:
    rows = [tokenizer.encode(text) for text in TEXTS]
    rows[1] = [*rows[1], tokenizer.eos_token_id]  # the second row ends on its own
    streamer, sink = _feed(tokenizer, rows, stop=(), prompt_tokens=[3, 3], offset=10)
    assert set(sink.pieces) == {10, 11}
    for row, text in zip((10, 11), TEXTS, strict=True):
        assert "".join(sink.pieces[row]) == text
        assert all("\ufffd" not in piece for piece in sink.pieces[row])
        assert len(sink.pieces[row]) > 5  # piece by piece, not at the end
    assert sink.answers[10] == Generation(TEXTS[0], 3, len(rows[0]), "length")
    assert sink.answers[11] == Generation(TEXTS[1], 3, len(rows[1]) - 1, "stop")  # the eos is not counted
    assert streamer.results() == [sink.answers[10], sink.answers[11]]


def test_a_stop_string_is_never_sent_and_ends_only_its_row(tokenizer: Any) -> None:
    rows = [tokenizer.encode(text) for text in TEXTS]
    _, sink = _feed(tokenizer, rows, stop=("STOP", "zz"), prompt_tokens=[1, 1])
    assert "".join(sink.pieces[1]) == "alpha beta"
    assert not any("S" in piece for piece in sink.pieces[1])  # no piece of the stop string left early
    assert sink.answers[1].finish_reason == "stop"
    assert sink.answers[1].completion_tokens < len(rows[1])  # tokens after the stop string are not read
    assert "".join(sink.pieces[0]) == TEXTS[0] and sink.answers[0].finish_reason == "length"
    assert sink.stopped_at_step_8 == [False, True]


def test_a_row_whose_reader_has_gone_stops_and_the_others_go_on(tokenizer: Any) -> None:
    rows = [tokenizer.encode(text) for text in TEXTS]
    sink = Recorder(leaves={0: 2})
    _, sink = _feed(tokenizer, rows, sink, stop=(), prompt_tokens=[1, 1])
    assert len(sink.pieces[0]) == 2 and sink.answers[0].completion_tokens < len(rows[0])
    assert sink.answers[0].text == "".join(sink.pieces[0])
    assert sink.stopped_at_step_8 == [True, False]
    assert "".join(sink.pieces[1]) == TEXTS[1]
