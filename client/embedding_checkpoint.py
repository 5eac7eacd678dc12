"""Embeddings kept while a long task is embedded, so a stopped daemon resumes where it was.

`embed_resumably` embeds in chunks of `CHUNK` texts and appends each chunk's vectors to one
file (float32 rows) next to a small header naming the profile and the sha256 of the texts in
order: a changed data file or market profile starts over, a torn last chunk is dropped. The
vectors are as private as the texts: both files are owner-only, on this machine, never logged,
and the caller deletes them (`discard`) once the release is made or the task removed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from lmdock.client.files import open_private, private_dir
from lmdock.client.progress import Progress

if TYPE_CHECKING:
    from lmdock.client.embedder import Embedder

__all__ = ["CHUNK", "discard", "embed_resumably"]

CHUNK = 512  # texts per saved chunk: what a stop can lose


def _key(embedder: Embedder, texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)
    return json.dumps({"profile": embedder.profile.profile_id, "texts": digest.hexdigest()})


def _header(path: Path) -> Path:
    return path.with_suffix(".json")


def _resumed(path: Path, key: str, dim: int, count: int) -> npt.NDArray[np.float32]:
    """The rows already embedded for `key` (none when the files are for other texts)."""
    try:
        if _header(path).read_text() != key:
            return np.empty((0, dim), np.float32)
        rows = np.fromfile(path, dtype=np.float32)
    except (OSError, ValueError):
        return np.empty((0, dim), np.float32)
    whole = min(rows.size // dim, count)  # a chunk cut short by a kill is dropped
    return rows[: whole * dim].reshape(whole, dim)


def embed_resumably(
    embedder: Embedder,
    texts: Sequence[str],
    path: Path,
    *,
    progress: Progress | None = None,
    chunk: int = CHUNK,
) -> npt.NDArray[np.float32]:
    """`embedder.embed(texts)`, continuing from the rows saved at `path` by an earlier, stopped call."""
    dim = embedder.profile.embedding_dim
    key = _key(embedder, texts)
    parts = [_resumed(path, key, dim, len(texts))]
    done = len(parts[0])
    private_dir(path.parent)
    if done == 0:  # fresh: header first, then an empty row file
        os.close(open_private(path, os.O_WRONLY | os.O_TRUNC))
        header = open_private(_header(path), os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(header, "w") as out:
            out.write(key)
    elif progress is not None:
        progress(done, len(texts))
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_APPEND), "ab") as rows:
        rows.truncate(done * dim * 4)  # drop a torn chunk before appending
        while done < len(texts):
            offset = done

            def report(n: int, _: int, offset: int = offset) -> None:
                if progress is not None:
                    progress(offset + n, len(texts))

            vectors = embedder.embed(texts[offset : offset + chunk], progress=report)
            rows.write(vectors.astype(np.float32).tobytes())
            rows.flush()
            parts.append(vectors)
            done += len(vectors)
    return np.concatenate(parts).astype(np.float32)


def discard(path: Path) -> None:
    """Delete the saved rows of `path` (and their header), if any."""
    path.unlink(missing_ok=True)
    _header(path).unlink(missing_ok=True)
