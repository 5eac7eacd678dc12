"""The person column of a task file: it makes the person the privacy unit, on every record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmdock.client.task.jsonl import read_jsonl_task
from lmdock.common.errors import InvalidArgument


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_person_ids_are_read_when_the_file_names_them(tmp_path: Path) -> None:
    task = read_jsonl_task(
        write(tmp_path / "t.jsonl", [{"text": "a", "person": "p1"}, {"text": "b", "person": 7}])
    )
    assert task.persons == ("p1", "7")
    assert read_jsonl_task(write(tmp_path / "u.jsonl", [{"text": "a"}, {"text": "b"}])).persons == ()


def test_another_field_can_name_the_person(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [{"text": "a", "patient_id": "x"}, {"text": "b", "patient_id": "y"}])
    assert read_jsonl_task(path, person_field="patient_id").persons == ("x", "y")
    assert read_jsonl_task(path).persons == ()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"text": "a", "person": "p1"}, {"text": "b"}], "record 2 has no"),
        ([{"text": "a", "person": ["p1"]}], "must be a string or an integer"),
        ([{"text": "a", "person": True}], "must be a string or an integer"),
    ],
)
def test_a_partial_or_malformed_person_column_is_refused(
    tmp_path: Path, rows: list[dict], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        read_jsonl_task(write(tmp_path / "t.jsonl", rows))


def test_a_unicode_line_separator_inside_a_text_is_not_a_line_break(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "one\u2028two", "person": "p"}, ensure_ascii=False) + "\n")
    assert read_jsonl_task(path).texts == ("one\u2028two",)
