"""The reference learnwares' data: small attributed samples shipped in lmdock/lab/data.

Each sample file is already shuffled; its records are split by fixed fractions into
`train` (the publisher's training data, also summarised by its spec), `eval` (the publisher's
held-out evaluation, written into the manifest) and `task` (held out from both: user tasks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmdock.common.card import Card
from lmdock.lab.building import PUBLISHER

__all__ = ["DATA_DIR", "REFERENCE_SETS", "ReferenceSet", "load_split"]

DATA_DIR = Path(__file__).parent / "data"
SPLITS = {"train": (0.0, 0.57), "eval": (0.57, 0.71), "task": (0.71, 1.0)}


@dataclass(frozen=True)
class ReferenceSet:
    sample: str  # file stem in DATA_DIR
    card: Card
    max_tokens: int = 64
    epochs: int = 3


REFERENCE_SETS: tuple[ReferenceSet, ...] = (
    ReferenceSet(
        sample="tfns",
        card=Card(
            id="finance-news-sentiment",
            name="Financial news sentiment",
            domain="finance",
            licence="MIT",
            publisher=PUBLISHER,
            description="Bearish / bullish / neutral sentiment of finance news tweets.",
            tags=("sentiment", "tweets"),
        ),
    ),
    ReferenceSet(
        sample="banking77",
        card=Card(
            id="finance-banking-intent",
            name="Banking customer intent",
            domain="finance",
            licence="CC-BY-4.0",
            publisher=PUBLISHER,
            description="Intent of retail-banking customer messages (15 BANKING77 intents).",
            tags=("intent", "customer-support"),
        ),
        epochs=6,
    ),
    ReferenceSet(
        sample="medquad",
        card=Card(
            id="medical-question-type",
            name="Medical question type",
            domain="medical",
            licence="CC-BY-4.0",
            publisher=PUBLISHER,
            description=(
                "Type of a consumer health question (symptoms, treatment, inheritance, ...), MedQuAD."
            ),
            tags=("question-type", "consumer-health"),
        ),
    ),
    ReferenceSet(
        sample="math_competition",
        card=Card(
            id="math-competition-subject",
            name="Math problem subject",
            domain="math",
            licence="MIT",
            publisher=PUBLISHER,
            description="Subject of a competition math problem (Algebra, Geometry, ...), MATH.",
            tags=("subject", "competition-math"),
        ),
        max_tokens=128,
    ),
)


def _records(sample: str) -> list[dict[str, str]]:
    path = DATA_DIR / f"{sample}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def load_split(sample: str, split: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of one split of a shipped sample."""
    rows = _records(sample)
    lo, hi = SPLITS[split]
    part = rows[round(lo * len(rows)) : round(hi * len(rows))]
    return [r["text"] for r in part], [r["label"] for r in part]


def label_set(sample: str) -> tuple[str, ...]:
    """All labels of a sample, sorted (the head's label order)."""
    return tuple(sorted({r["label"] for r in _records(sample)}))
