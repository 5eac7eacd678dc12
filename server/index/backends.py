"""Which index a market builds at start, and what a backend may read to build it.

`exact` (the default) keeps every spec in a float32 matrix and scans it; `hnsw` answers from a
faiss HNSW graph and `ivf` from a faiss inverted file, each re-ranked exactly and persisted (in
DATA_DIR/index/<profile id>/, one per served profile) so a restart does not rebuild it (both
need the `ann` extra: `pip install 'lmdock[ann]'`). docs/search.md says when to choose which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lmdock.common.errors import FailedPrecondition, InvalidArgument
from lmdock.common.spec import ComparedProfile
from lmdock.server.index import IndexEntry, SpecIndex
from lmdock.server.index.exact import ExactIndex

__all__ = ["BACKENDS", "IndexFactory", "IndexSource", "exact_index", "index_factory"]

BACKENDS = ("exact", "hnsw", "ivf")


@dataclass(frozen=True)
class IndexSource:
    """The searchable learnwares of a catalogue (spec noise within the profile's max_sigma)."""

    profile: ComparedProfile
    entries: Callable[[], Iterator[IndexEntry]]  # streamed in id order, vectors included
    keys: Callable[[], Iterator[tuple[str, str]]]  # (id, package sha256), no vectors read
    count: Callable[[], int]  # an upper bound of how many `entries` yields


IndexFactory = Callable[[IndexSource], SpecIndex]


def exact_index(source: IndexSource) -> SpecIndex:
    return ExactIndex.from_entries(source.entries(), expected=source.count())


def index_factory(kind: str, data_dir: Path | None) -> IndexFactory:
    """The factory for `lmdock-market serve --index KIND`; a persisted index lives in data_dir."""
    if kind == "exact":
        return exact_index
    if kind in ("hnsw", "ivf"):
        try:
            from lmdock.server.index.hnsw import HnswIndex
            from lmdock.server.index.ivf import IvfIndex
        except ImportError as exc:
            raise FailedPrecondition(
                f"--index {kind} needs faiss ({exc}): pip install 'lmdock[ann]'"
            ) from None
        backend = HnswIndex if kind == "hnsw" else IvfIndex
        directory = data_dir / "index" if data_dir is not None else None
        return lambda source: backend.open(
            source, directory=None if directory is None else directory / source.profile.profile_id
        )
    raise InvalidArgument(f"unknown index {kind!r} (choose from {', '.join(BACKENDS)})")
