"""Cut the small, attributed samples of ../shared/data that ship inside lmdock for the demo.

Run from the repository root: `python -m lmdock.lab.sample_demo_data ../shared/data`.
Deterministic: the same source files give the same samples. Each sample keeps only
id, text and label; the licence and SOURCE.md of each data set are copied beside it.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).parent / "data"

#: name -> (source folder, records, label subset or None, max text chars)
SAMPLES = {
    "tfns": ("finance/twitter_financial_news_sentiment", 1050, None, 600),
    "banking77": ("finance/banking77", 600, 15, 600),
    "medquad": ("medical/medquad", 1050, None, 600),
    "math_competition": ("math/math_competition", 1050, None, 600),
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def sample(source_root: Path) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / "LICENSES").mkdir(exist_ok=True)
    for name, (folder, count, n_labels, limit) in SAMPLES.items():
        src = source_root / folder
        rows = [json.loads(line) for line in (src / "data.jsonl").open(encoding="utf-8")]
        if n_labels is not None:  # keep the first n_labels labels in file order
            by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
            for row in rows:
                by_label[row["label"]].append(row)
            rows = [r for label in list(by_label)[:n_labels] for r in by_label[label]]
        random.Random(0).shuffle(rows)
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as out:
            for row in rows[:count]:
                record = {"id": row["id"], "text": _cut(row["text"], limit), "label": row["label"]}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        for licence in sorted(src.iterdir()):
            if licence.name.startswith("LICENSE") or licence.name == "SOURCE.md":
                shutil.copyfile(licence, OUT / "LICENSES" / f"{name}-{licence.name}")


if __name__ == "__main__":
    sample(Path(sys.argv[1]))
