"""Real task data for the benchmarks: the shared data sets, embedded once and cached on disk.

The data sets live outside the repository (../shared/data, or $LMDOCK_SHARED_DATA;
see its README for sources and licences). Embeddings come from the profile's pinned embedder
(all-MiniLM-L6-v2) and are cached under $LMDOCK_BENCH_CACHE (default
~/.cache/lmdock/bench), keyed by the embedder's weight hash, the token limit and the data
file's sha256, so a second run only reads them back.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lmdock.common.hashing import sha256_file
from lmdock.common.profile import SpecProfile

ROOT = Path(__file__).resolve().parent.parent
#: ../shared/data next to the checkout (or next to the folder of worktrees holding it)
DEFAULT_DATA = (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data")
DATA_SETS = (
    "finance/banking77",
    "finance/tatqa",
    "finance/twitter_financial_news_sentiment",
    "general/strategyqa",
    "math/aqua_rat",
    "math/gsm8k",
    "math/math_competition",
    "medical/covid_qa",
    "medical/medquad",
    "medical/pubmedqa",
)


def data_dir() -> Path:
    given = os.environ.get("LMDOCK_SHARED_DATA")
    for path in [Path(given)] if given else DEFAULT_DATA:
        if (path / DATA_SETS[0] / "data.jsonl").is_file():
            return path
    raise SystemExit("shared data not found (../shared/data); set LMDOCK_SHARED_DATA")


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "lmdock" / "bench"
    path = Path(os.environ.get("LMDOCK_BENCH_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class EmbeddedSet:
    name: str
    texts: tuple[str, ...]
    labels: tuple[str | None, ...]
    embeddings: np.ndarray  # (n, d) float32 unit rows


def read_records(path: Path) -> list[dict[str, object]]:
    # split on "\n" only: str.splitlines also splits on U+2028 inside JSON strings
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def load_embedded(name: str, profile: SpecProfile) -> EmbeddedSet:
    """The data set's texts, labels and unit embeddings under `profile` (cached)."""
    path = data_dir() / name / "data.jsonl"
    records = read_records(path)
    texts = tuple(str(r["text"]) for r in records)
    labels = tuple(None if r.get("label") is None else str(r["label"]) for r in records)
    key = f"{profile.embedder_sha256[:12]}-{profile.max_tokens}-{sha256_file(path)[:12]}"
    cached = cache_dir() / f"{name.replace('/', '__')}-{key}.npy"
    if cached.exists():
        embeddings = np.load(cached)
    else:
        from lmdock.client.embedder import Embedder

        print(f"embedding {name} ({len(texts)} texts; cached afterwards)", file=sys.stderr, flush=True)
        embeddings = Embedder(profile).embed(texts)
        tmp = cached.with_suffix(".tmp.npy")
        np.save(tmp, embeddings)
        tmp.replace(cached)
    return EmbeddedSet(name=name, texts=texts, labels=labels, embeddings=embeddings)


def load_all(profile: SpecProfile) -> list[EmbeddedSet]:
    return [load_embedded(name, profile) for name in DATA_SETS]


if __name__ == "__main__":
    from lmdock.common.profile_factory import make_profile

    for s in load_all(make_profile()):
        print(s.name, s.embeddings.shape)
