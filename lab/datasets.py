"""Records of the evaluation data sets, their labels, and the fixed hash split between them.

A data set is read from a data root: `ROOT/<domain>/<name>/data.jsonl` for the shared data
(`../shared/data`, one JSON object per line: id, text, answer and/or label, meta), or
`ROOT/<name>.jsonl` for the small samples shipped in `lmdock/lab/data`.

Every record gets a position u in [0, 1): the first 8 bytes of sha256("<data set>/<id>") read
as a fraction. A learnware trains on the records of a u-range, a user task samples another;
disjoint ranges keep user tasks out of every learnware's training data whatever the order of
the file, and the same record always lands in the same place.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdock.common.errors import FailedPrecondition, InvalidArgument

__all__ = ["LABELERS", "Record", "Selection", "load_records", "position", "select"]


@dataclass(frozen=True)
class Record:
    dataset: str
    id: str
    text: str
    fields: Mapping[str, Any]  # the JSON object as read (label, answer, meta, ...)


def position(dataset: str, record_id: str) -> float:
    """u in [0, 1): where a record sits in the fixed split of its data set."""
    digest = hashlib.sha256(f"{dataset}/{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _path(root: Path, dataset: str) -> Path:
    return root / dataset / "data.jsonl" if "/" in dataset else root / f"{dataset}.jsonl"


def load_records(root: Path, dataset: str) -> list[Record]:
    """All records of `dataset` under `root`, sorted by their split position u."""
    path = _path(root, dataset)
    if not path.is_file():
        raise FailedPrecondition(f"data set {dataset!r} not found at {path}: pass --data DIR")
    rows = []
    # split on "\n" only: texts may hold U+2028 and friends, which str.splitlines breaks on
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append(Record(dataset, str(row["id"]), str(row["text"]), row))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"{path}:{number}: not a record with id and text ({exc})") from None
    return sorted(rows, key=lambda r: position(dataset, r.id))


def _field(record: Record, name: str) -> Any:
    value: Any = record.fields
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _gsm8k_steps(record: Record) -> str:
    """Number of calculator annotations in the reference solution, bucketed (a difficulty label)."""
    steps = str(_field(record, "meta.solution") or "").count("<<")
    return "1 step" if steps <= 1 else ("5+ steps" if steps >= 5 else f"{steps} steps")


def _scale(record: Record) -> str:
    return str(_field(record, "meta.scale") or "") or "none"


#: Labels that are not a plain field: name -> function of a record.
LABELERS: dict[str, Callable[[Record], str]] = {
    "gsm8k_steps": _gsm8k_steps,
    "tatqa_scale": _scale,
    "domain": lambda r: r.dataset.split("/")[0],
}


def label_of(record: Record, label: str) -> str | None:
    """The record's label under `label`: a labeler name or a (dotted) field name."""
    value = LABELERS[label](record) if label in LABELERS else _field(record, label)
    return None if value is None else str(value)


@dataclass(frozen=True)
class Selection:
    """Records of one data set: a u-range, optional field filters, a label, a cap."""

    dataset: str
    label: str
    part: tuple[float, float]
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (field, allowed values)
    limit: int | None = None

    def __post_init__(self) -> None:
        lo, hi = self.part
        if not 0.0 <= lo < hi <= 1.0:
            raise InvalidArgument(f"part {self.part} must satisfy 0 <= lo < hi <= 1")


_LABEL_CLEAN = re.compile(r"\s+")


def select(records: Iterable[Record], selection: Selection) -> list[tuple[Record, str]]:
    """(record, label) pairs chosen by `selection`, in split order; records without a label are skipped."""
    lo, hi = selection.part
    out: list[tuple[Record, str]] = []
    for record in records:
        if not lo <= position(record.dataset, record.id) < hi:
            continue
        if any(str(_field(record, f)) not in allowed for f, allowed in selection.where):
            continue
        label = label_of(record, selection.label)
        if label is None:
            continue
        out.append((record, _LABEL_CLEAN.sub(" ", label).strip()))
        if selection.limit is not None and len(out) >= selection.limit:
            break
    return out
