"""What a task file holds once read, and the limits every reader enforces."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIN_SEARCH_RECORDS", "Columns", "ReaderLimits", "TaskData"]

#: Fewer records and a private search is mostly noise (the spec's sigma grows as 1/n): the
#: CLI and the daemon (its `privacy.min_records` default) refuse smaller task files.
MIN_SEARCH_RECORDS = 50


@dataclass(frozen=True)
class Columns:
    """Which CSV/TSV column holds what; `person` names the person (field, for JSONL) that makes
    one person, not one record, the privacy unit. Empty: no such column."""

    text: str = "text"
    label: str = ""
    answer: str = ""
    person: str = ""


@dataclass(frozen=True)
class ReaderLimits:
    max_file_bytes: int = 512 * 1024 * 1024
    max_records: int = 200_000
    max_text_chars: int = 100_000


@dataclass(frozen=True)
class TaskData:
    texts: tuple[str, ...]
    labels: tuple[str | None, ...]
    answers: tuple[str | None, ...]
    persons: tuple[str, ...] = ()  # one id per record when the file names a person column

    @property
    def has_labels(self) -> bool:
        return all(label is not None for label in self.labels)

    @property
    def has_answers(self) -> bool:
        return all(answer is not None for answer in self.answers)
