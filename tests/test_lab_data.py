"""The lab's data layer: the fixed hash split, selections, and the hold-out check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmdock.common.errors import FailedPrecondition, InvalidArgument
from lmdock.lab.datasets import Selection, label_of, load_records, position, select
from lmdock.lab.definitions import LearnwareDef, MarketDef, TaskDef, materialize
from lmdock.lab.refdata import DATA_DIR
from lmdock.lab.reference_market import BANKING_GROUPS, FULL, QUICK


def _write(root: Path, name: str, rows: list[dict]) -> None:
    (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _rows(n: int) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "text": f"text number {i}",
            "label": "odd" if i % 2 else "even",
            "meta": {"k": str(i % 3)},
        }
        for i in range(n)
    ]


def test_position_is_a_fixed_fraction() -> None:
    assert position("a", "1") == position("a", "1")
    assert position("a", "1") != position("b", "1")
    values = [position("set", str(i)) for i in range(2000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.35 < sum(v < 0.4 for v in values) / len(values) < 0.45  # roughly uniform


def test_load_records_sorts_by_position_and_keeps_unicode_line_separators(tmp_path: Path) -> None:
    rows = _rows(30)
    rows[3]["text"] = "one\u2028line"
    _write(tmp_path, "toy", rows)
    records = load_records(tmp_path, "toy")
    assert len(records) == 30
    assert [position("toy", r.id) for r in records] == sorted(position("toy", r.id) for r in records)
    assert any(r.text == "one\u2028line" for r in records)


def test_load_records_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="not found"):
        load_records(tmp_path, "missing")
    (tmp_path / "bad.jsonl").write_text('{"id": "1", "text": "ok"}\n{"text": "no id"}\n')
    with pytest.raises(InvalidArgument, match=r"bad.jsonl:2"):
        load_records(tmp_path, "bad")


def test_select_filters_by_part_field_and_limit(tmp_path: Path) -> None:
    _write(tmp_path, "toy", _rows(200))
    records = load_records(tmp_path, "toy")
    low = select(records, Selection("toy", "label", (0.0, 0.5)))
    high = select(records, Selection("toy", "label", (0.5, 1.0)))
    assert len(low) + len(high) == 200
    assert not {r.id for r, _ in low} & {r.id for r, _ in high}
    twos = select(records, Selection("toy", "meta.k", (0.0, 1.0), where=(("meta.k", ("2",)),), limit=5))
    assert len(twos) == 5 and {label for _, label in twos} == {"2"}
    with pytest.raises(InvalidArgument):
        Selection("toy", "label", (0.6, 0.2))


def test_derived_labels() -> None:
    from lmdock.lab.datasets import Record

    gsm = Record("math/gsm8k", "1", "q", {"meta": {"solution": "a <<1+1=2>> b <<2*3=6>>"}})
    assert label_of(gsm, "gsm8k_steps") == "2 steps"
    assert label_of(Record("finance/tatqa", "2", "q", {"meta": {"scale": ""}}), "tatqa_scale") == "none"
    assert label_of(Record("medical/x", "3", "q", {}), "domain") == "medical"
    assert label_of(Record("medical/x", "3", "q", {}), "label") is None


def _catalogue(task_part: tuple[float, float]) -> MarketDef:
    learnware = LearnwareDef("toy-lw", "Toy", "toy", "toy", (Selection("toy", "label", (0.4, 1.0)),))
    task = TaskDef("toy-task", "toy", "toy", (Selection("toy", "label", task_part),), ("toy-lw",))
    return MarketDef("toy", (learnware,), (task,), {"toy": "CC0; toy"})


def test_materialize_holds_tasks_out_of_training_data(tmp_path: Path) -> None:
    _write(tmp_path, "toy", _rows(300))
    market = materialize(_catalogue((0.0, 0.4)), tmp_path)
    (recipe,), (task,) = market.recipes, market.tasks
    assert recipe.labels == ("even", "odd") and task.label_set == ("even", "odd")
    assert not set(task.texts) & (set(recipe.train_texts) | set(recipe.eval_texts))
    assert len(recipe.eval_texts) > 0 and recipe.card.licence == "CC0"
    with pytest.raises(InvalidArgument, match=r"shares .* records with learnware data"):
        materialize(_catalogue((0.3, 0.5)), tmp_path)


def test_materialize_refuses_duplicate_texts_across_the_split(tmp_path: Path) -> None:
    rows = _rows(300)
    for r in rows:
        r["text"] = f"same text {int(r['id'][1:]) % 150}"  # every text twice, under two ids
    _write(tmp_path, "toy", rows)
    with pytest.raises(InvalidArgument, match="shares"):
        materialize(_catalogue((0.0, 0.4)), tmp_path)


def test_reference_catalogue_is_well_formed() -> None:
    ids = [lw.id for lw in FULL.learnwares]
    assert len(ids) == len(set(ids)) >= 30
    assert len(FULL.tasks) >= 20
    assert all(set(t.right) <= set(ids) for t in FULL.tasks)
    intents = [i for group in BANKING_GROUPS.values() for i in group.split()]
    assert len(intents) == len(set(intents)) == 77
    datasets = {s.dataset for d in (*FULL.learnwares, *FULL.tasks) for s in d.data}
    assert datasets <= set(FULL.licences)


def test_quick_slice_materializes_from_the_shipped_samples() -> None:
    market = materialize(QUICK, DATA_DIR, quick=True)
    assert len(market.recipes) == len(market.tasks) == 4
    for recipe, task in zip(market.recipes, market.tasks, strict=True):
        assert task.right == (recipe.card.id,)
        assert not set(task.texts) & set(recipe.train_texts)
