"""One entry point for task data in any supported format: JSONL, CSV, TSV or plain text.

The format comes from the file's suffix unless named. Every reader refuses empty, wrongly
encoded and oversized files with a message that says what to do; `min_records` refuses a task
too small for a useful private search (the spec's noise grows as 1/n).
"""

from __future__ import annotations

from pathlib import Path

from lmdock.client.task.data import Columns, ReaderLimits, TaskData
from lmdock.client.task.delimited import read_csv_task
from lmdock.client.task.encoding import check_text_encoding
from lmdock.client.task.jsonl import read_jsonl_task
from lmdock.client.task.plain_text import read_text_task
from lmdock.common.errors import InvalidArgument

__all__ = ["FORMATS", "detect_format", "read_task_file"]

FORMATS = ("jsonl", "csv", "tsv", "text")
_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "text"}


def detect_format(path: Path, requested: str = "auto") -> str:
    if requested != "auto":
        if requested not in FORMATS:
            raise InvalidArgument(f"format must be one of auto, {', '.join(FORMATS)}; not {requested!r}")
        return requested
    try:
        return _BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise InvalidArgument(
            f"cannot tell the format of {path} from its suffix; name it with --format ({', '.join(FORMATS)})"
        ) from None


def read_task_file(
    path: Path,
    *,
    format: str = "auto",
    columns: Columns = Columns(),
    min_records: int = 1,
    limits: ReaderLimits = ReaderLimits(),
) -> TaskData:
    """Read `path`; JSONL files use their "text", "label" and "answer" fields, and the person
    field `columns.person` (default "person")."""
    kind = detect_format(path, format)
    check_text_encoding(path)
    if kind == "jsonl":
        if (columns.text, columns.label, columns.answer) != ("text", "", ""):
            raise InvalidArgument(
                "column choice applies to CSV/TSV files; JSONL records use the fields "
                '"text", "label" and "answer" (and a person field)'
            )
        task = read_jsonl_task(path, limits=limits, person_field=columns.person or "person")
    elif kind == "text":
        task = read_text_task(path, limits=limits)
    else:
        task = read_csv_task(
            path,
            delimiter="\t" if kind == "tsv" else ",",
            columns=columns,
            limits=limits,
        )
    if len(task.texts) < min_records:
        raise InvalidArgument(
            f"{path} has {len(task.texts)} records; a private search needs at least {min_records}, "
            "because the noise that protects the records drowns their signal in a smaller set"
        )
    return task
