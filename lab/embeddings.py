"""The profile's embedder with a memory of what it has embedded, optionally kept on disk.

In memory a text is embedded once per run. With a folder, the vectors are also kept in
FOLDER/<embedder sha256[:16]>-<max_tokens>.npz, keyed by the sha256 of each text, so a rerun
(or another evaluation over the same texts) only reads them back. The key covers everything a
vector depends on: the embedder's weights (their hash, which the profile pins and `Embedder`
checks), the token limit, and the text itself. The file is rewritten atomically after each
call that embedded something new.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from lmdock.client.embedder import Embedder
from lmdock.common.profile import SpecProfile

__all__ = ["CachingEmbedder"]


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class CachingEmbedder(Embedder):
    """The profile's embedder, remembering every text it has embedded (on disk with `folder`)."""

    def __init__(self, profile: SpecProfile, *, folder: Path | None = None) -> None:
        super().__init__(profile)
        self._seen: dict[bytes, npt.NDArray[np.float32]] = {}
        self._file = (
            None if folder is None else folder / f"{profile.embedder_sha256[:16]}-{profile.max_tokens}.npz"
        )
        if self._file is not None and self._file.exists():
            with np.load(self._file) as stored:
                keys, vectors = stored["keys"], stored["vectors"]
            if vectors.shape[1:] == (profile.embedding_dim,):
                self._seen = {k.tobytes(): v for k, v in zip(keys, vectors, strict=True)}

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: Any = None) -> Any:
        keys = [_key(t) for t in texts]
        missing = list({k: t for k, t in zip(keys, texts, strict=True) if k not in self._seen}.items())
        if missing:
            vectors = super().embed([t for _, t in missing], batch_size=batch_size, progress=progress)
            for (key, _), vector in zip(missing, vectors, strict=True):
                self._seen[key] = vector
            self._save()
        out = np.empty((len(texts), self.profile.embedding_dim), dtype=np.float32)
        for i, key in enumerate(keys):
            out[i] = self._seen[key]
        return out

    def _save(self) -> None:
        if self._file is None:
            return
        self._file.parent.mkdir(parents=True, exist_ok=True)
        keys = np.frombuffer(b"".join(self._seen), dtype=np.uint8).reshape(-1, 32)
        vectors = np.stack(list(self._seen.values())) if self._seen else np.empty((0, 0), np.float32)
        fd, tmp = tempfile.mkstemp(dir=self._file.parent, suffix=".npz.partial")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=keys, vectors=vectors)
            os.replace(tmp, self._file)
        except BaseException:
            os.unlink(tmp)
            raise
