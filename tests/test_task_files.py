"""Task data readers: JSONL, CSV/TSV with column choice, plain text; clear errors for bad files."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
from lmdock.client.task import Columns, ReaderLimits
from lmdock.client.task.read import detect_format, read_task_file
from lmdock.common.errors import InvalidArgument


def _file(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_csv_with_chosen_columns(tmp_path: Path) -> None:
    path = _file(tmp_path, "notes.csv", 'id,note,dx\n1,"chest pain, at rest",cardio\n\n2,cough,pulmo\n')
    task = read_task_file(path, columns=Columns(text="note", label="dx"))
    assert task.texts == ("chest pain, at rest", "cough")
    assert task.labels == ("cardio", "pulmo") and task.has_labels and not task.has_answers


def test_a_person_column_makes_the_person_the_privacy_unit(tmp_path: Path) -> None:
    path = _file(tmp_path, "visits.csv", "patient,note\np1,fever\np2,cough\np1,rash\n")
    task = read_task_file(path, columns=Columns(text="note", person="patient"))
    assert task.persons == ("p1", "p2", "p1")
    with pytest.raises(InvalidArgument, match="column 'patient' \\(the person\\) is empty"):
        read_task_file(
            _file(tmp_path, "gap.csv", "patient,note\n,fever\n"),
            columns=Columns(text="note", person="patient"),
        )


def test_tsv_and_text_and_jsonl(tmp_path: Path) -> None:
    tsv = read_task_file(
        _file(tmp_path, "a.tsv", "text\tanswer\nwhat is 2+2\t4\n"), columns=Columns(answer="answer")
    )
    assert tsv.texts == ("what is 2+2",) and tsv.answers == ("4",)
    text = read_task_file(_file(tmp_path, "a.txt", "\ufefffirst line\r\n\n  second\u2028line \n"))
    assert text.texts == ("first line", "  second\u2028line ") and text.labels == (None, None)
    jsonl = read_task_file(_file(tmp_path, "a.jsonl", '{"text": "hi", "label": "x"}\n'))
    assert jsonl.texts == ("hi",) and jsonl.labels == ("x",)
    assert detect_format(Path("x.data"), "csv") == "csv"


@pytest.mark.parametrize(
    ("name", "content", "options", "message"),
    [
        ("e.csv", "", {}, "is empty"),
        ("e.jsonl", "", {}, "is empty"),
        ("h.csv", "text\n\n", {}, "holds a header but no records"),
        ("b.txt", "\n \n", {}, "holds only blank lines"),
        ("c.csv", "note\nx\n", {}, "column 'text' is not in"),
        (
            "c2.csv",
            "text\nx\n",
            {"columns": Columns(label="dx")},
            "choose the label column with --label-column",
        ),
        (
            "r.csv",
            "text,dx\na,b,c\n",
            {"columns": Columns(label="dx")},
            ":2: row has 3 fields, the header has 2",
        ),
        ("d.csv", "text,text\na,b\n", {}, "names a column twice"),
        ("q.csv", 'text\n"unclosed\n', {}, "malformed CSV"),
        ("m.csv", "text,dx\n,x\n", {"columns": Columns(label="dx")}, ":2: column 'text' is empty"),
        ("l1.txt", "caf\xe9\n".encode("latin-1"), {}, "is not UTF-8: byte 0xe9 on line 1"),
        ("u16.csv", codecs.BOM_UTF16_LE + "text\nx\n".encode("utf-16-le"), {}, "is UTF-16 encoded"),
        ("bin.jsonl", b"\x00\x01\x02binary", {}, "looks like a binary file"),
        ("x.docx", "text\n", {}, "cannot tell the format"),
        ("j.jsonl", '{"text": "a"}\n', {"columns": Columns(text="body")}, "column choice applies to CSV/TSV"),
        ("few.txt", "a\nb\n", {"min_records": 3}, "has 2 records; a private search needs at least 3"),
    ],
)
def test_bad_task_files_are_refused_clearly(
    tmp_path: Path, name: str, content: str | bytes, options: dict, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace("+", r"\+")):
        read_task_file(_file(tmp_path, name, content), **options)


def test_missing_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        read_task_file(tmp_path / "nope.csv")
    big = _file(tmp_path, "big.csv", "text\n" + "word\n" * 100)
    with pytest.raises(InvalidArgument, match="more than the limit of 100"):
        read_task_file(big, limits=ReaderLimits(max_file_bytes=100))
    with pytest.raises(InvalidArgument, match="more than 10 records"):
        read_task_file(big, limits=ReaderLimits(max_records=10))
    with pytest.raises(InvalidArgument, match="longer than 3 characters"):
        read_task_file(_file(tmp_path, "long.txt", "abcd\n"), limits=ReaderLimits(max_text_chars=3))


def test_the_cli_and_the_daemon_share_one_front_door_and_one_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lmdock search` reads every format through `read_task_file`, and refuses what the daemon refuses."""
    from lmdock.client.cli import main
    from lmdock.client.daemon.config import PrivacySettings
    from lmdock.client.task import MIN_SEARCH_RECORDS

    assert PrivacySettings().min_records == MIN_SEARCH_RECORDS == 50
    rows = "".join(f'{i},"note number {i}"\n' for i in range(MIN_SEARCH_RECORDS - 1))
    path = _file(tmp_path, "notes.csv", "id,note\n" + rows)
    # refused while reading, before any connection: the market address is never dialled
    argv = ["search", "--market", "127.0.0.1:9", "--data", str(path), "--text-column", "note"]
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path / "home"))
    assert main([*argv, "--epsilon", "1"]) == 2
    assert f"has 49 records; a private search needs at least {MIN_SEARCH_RECORDS}" in capsys.readouterr().err
    assert not (tmp_path / "home" / "ledger.jsonl").exists()


def test_person_ids_are_normalised_the_same_way_by_every_reader(tmp_path: Path) -> None:
    spellings = [" P-17", "p-17 ", "Ｐ-17", "P-17", "7", " 7", "Ann  Lee", "ann lee"]
    jsonl = tmp_path / "people.jsonl"
    rows = [{"text": f"note {i}", "person": p} for i, p in enumerate(spellings)]
    rows.append({"text": "note with an integer id", "person": 7})
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv_path = tmp_path / "people.csv"
    csv_path.write_text("text,person\n" + "".join(f'note {i},"{p}"\n' for i, p in enumerate(spellings)))
    from_jsonl = read_task_file(jsonl).persons
    from_csv = read_task_file(csv_path, columns=Columns(person="person")).persons
    assert from_jsonl[:-1] == from_csv == ("p-17",) * 4 + ("7",) * 2 + ("ann lee",) * 2
    assert from_jsonl[-1] == "7"
