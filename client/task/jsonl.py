"""Reading a user's task data: JSONL with a "text" field and optional "label"/"answer".

A "person" field (or another one named by `person_field`) makes the person the privacy unit:
when any record has it, every record must, and the spec bounds each person's contribution.

Errors name the file and line. Limits keep a wrong file from exhausting the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmdock.client.task.data import ReaderLimits, TaskData
from lmdock.client.task.normalize import person_id
from lmdock.common.errors import InvalidArgument

__all__ = ["read_jsonl_task"]


def read_jsonl_task(
    path: Path, *, limits: ReaderLimits = ReaderLimits(), person_field: str = "person"
) -> TaskData:
    if not path.is_file():
        raise InvalidArgument(f"task file {path} does not exist")
    if path.stat().st_size > limits.max_file_bytes:
        raise InvalidArgument(f"{path} is larger than {limits.max_file_bytes} bytes")
    texts: list[str] = []
    labels: list[str | None] = []
    answers: list[str | None] = []
    persons: list[str | None] = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 is text
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("text"), str)
            or not record["text"].strip()
        ):
            raise InvalidArgument(f'{path}:{number}: each line needs a non-empty string field "text"')
        if len(record["text"]) > limits.max_text_chars:
            raise InvalidArgument(f"{path}:{number}: text longer than {limits.max_text_chars} characters")
        texts.append(record["text"])
        labels.append(None if record.get("label") is None else str(record["label"]))
        answers.append(None if record.get("answer") is None else str(record["answer"]))
        person = record.get(person_field)
        if person is not None and (isinstance(person, bool) or not isinstance(person, (str, int))):
            raise InvalidArgument(f'{path}:{number}: "{person_field}" must be a string or an integer')
        persons.append(person_id(person))
        if len(texts) > limits.max_records:
            raise InvalidArgument(f"{path} has more than {limits.max_records} records")
    if not texts:
        raise InvalidArgument(f"{path} holds no records")
    named = [p for p in persons if p is not None]
    if named and len(named) != len(persons):
        first = persons.index(None) + 1
        raise InvalidArgument(f'{path}: record {first} has no "{person_field}" although other records do')
    return TaskData(texts=tuple(texts), labels=tuple(labels), answers=tuple(answers), persons=tuple(named))
