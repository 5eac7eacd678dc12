"""Reading task data from plain text: one record per non-empty line."""

from __future__ import annotations

from pathlib import Path

from lmdock.client.task.data import ReaderLimits, TaskData
from lmdock.client.task.encoding import read_utf8
from lmdock.common.errors import InvalidArgument

__all__ = ["read_text_task"]


def read_text_task(path: Path, *, limits: ReaderLimits = ReaderLimits()) -> TaskData:
    """Each non-blank line is one text (no labels or answers); surrounding whitespace is kept.

    Lines end at "\n" (and a "\r" before it) only: U+2028 and the like are part of a text.
    """
    texts: list[str] = []
    lines = read_utf8(path, max_bytes=limits.max_file_bytes).split("\n")
    for number, line in enumerate((line.removesuffix("\r") for line in lines), start=1):
        if not line.strip():
            continue
        if len(line) > limits.max_text_chars:
            raise InvalidArgument(f"{path}:{number}: line longer than {limits.max_text_chars} characters")
        texts.append(line)
        if len(texts) > limits.max_records:
            raise InvalidArgument(f"{path} has more than {limits.max_records} records")
    if not texts:
        raise InvalidArgument(f"{path} holds only blank lines")
    return TaskData(texts=tuple(texts), labels=(None,) * len(texts), answers=(None,) * len(texts))
