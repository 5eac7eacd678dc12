"""Reading task data from CSV or TSV with a header row; the user chooses the columns."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from lmdock.client.task.data import Columns, ReaderLimits, TaskData
from lmdock.client.task.encoding import read_utf8
from lmdock.client.task.normalize import person_id
from lmdock.common.errors import InvalidArgument

__all__ = ["read_csv_task"]


def read_csv_task(
    path: Path,
    *,
    delimiter: str = ",",
    columns: Columns = Columns(),
    limits: ReaderLimits = ReaderLimits(),
) -> TaskData:
    """One record per row: text from `columns.text`, optional gold labels/answers from the others.

    Blank rows are skipped; a row with an empty text, or with more or fewer fields than the
    header, is an error naming its line. With `columns.person`, every row names its person (the
    privacy unit becomes the person, see docs/privacy.md).
    """
    text = read_utf8(path, max_bytes=limits.max_file_bytes)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InvalidArgument(f"task file {path} is empty")
        if len(set(header)) != len(header):
            raise InvalidArgument(f"{path}: the header names a column twice: {header}")
        positions = _columns(path, header, dataclasses.asdict(columns))
        texts: list[str] = []
        labels: list[str | None] = []
        answers: list[str | None] = []
        persons: list[str] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}:{reader.line_num}"
            if len(row) != len(header):
                raise InvalidArgument(f"{where}: row has {len(row)} fields, the header has {len(header)}")
            text = row[positions["text"]]
            if not text.strip():
                raise InvalidArgument(f"{where}: column {columns.text!r} is empty")
            if len(text) > limits.max_text_chars:
                raise InvalidArgument(f"{where}: text longer than {limits.max_text_chars} characters")
            texts.append(text)
            labels.append(_cell(row, positions.get("label")))
            answers.append(_cell(row, positions.get("answer")))
            if columns.person:
                person = person_id(row[positions["person"]])
                if person is None:
                    raise InvalidArgument(f"{where}: column {columns.person!r} (the person) is empty")
                persons.append(person)
            if len(texts) > limits.max_records:
                raise InvalidArgument(f"{path} has more than {limits.max_records} records")
    except csv.Error as exc:
        raise InvalidArgument(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    if not texts:
        raise InvalidArgument(f"{path} holds a header but no records")
    return TaskData(texts=tuple(texts), labels=tuple(labels), answers=tuple(answers), persons=tuple(persons))


def _columns(path: Path, header: list[str], wanted: dict[str, str]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for role, column in wanted.items():
        if not column:
            continue
        if column not in header:
            raise InvalidArgument(
                f"column {column!r} is not in {path} (columns: {', '.join(header)}); "
                f"choose the {role} column with --{role}-column"
            )
        positions[role] = header.index(column)
    return positions


def _cell(row: list[str], position: int | None) -> str | None:
    if position is None:
        return None
    value = row[position].strip()
    return value or None
