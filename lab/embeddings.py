"""The profile's embedder with a memory of what it has embedded, optionally kept on disk
(`TextVectors`: any per-text vector, e.g. the lab's task-vector gradient rows).

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from lmdock.client.embedder import Embedder
from lmdock.common.profile import SpecProfile

__all__ = ["CachingEmbedder", "TextVectors"]


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class TextVectors:
    """`compute`'s vector of each text, computed once: in memory, and in `file` (an npz of keys and
    vectors, rewritten atomically after each call that computed something new) when given."""

    def __init__(
        self,
        compute: Callable[[Sequence[str]], npt.NDArray[np.float32]],
        *,
        dim: int,
        file: Path | None = None,
    ) -> None:
        self.compute, self.dim, self._file = compute, dim, file
        self._seen: dict[bytes, npt.NDArray[np.float32]] = {}
        if file is not None and file.exists():
            with np.load(file) as stored:
                keys, vectors = stored["keys"], stored["vectors"]
            if vectors.shape[1:] == (dim,):
                self._seen = {k.tobytes(): v for k, v in zip(keys, vectors, strict=True)}

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        keys = [_key(t) for t in texts]
        missing = list({k: t for k, t in zip(keys, texts, strict=True) if k not in self._seen}.items())
        if missing:
            vectors = self.compute([t for _, t in missing])
            for (key, _), vector in zip(missing, vectors, strict=True):
                self._seen[key] = vector
            self._save()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
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


class CachingEmbedder(Embedder):
    """The profile's embedder, remembering every text it has embedded (on disk with `folder`)."""

    def __init__(self, profile: SpecProfile, *, folder: Path | None = None) -> None:
        super().__init__(profile)
        file = None if folder is None else folder / f"{profile.embedder_sha256[:16]}-{profile.max_tokens}.npz"
        self._vectors = TextVectors(self._embed_new, dim=profile.embedding_dim, file=file)
        self._batch_size, self._progress = 64, None

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: Any = None) -> Any:
        self._batch_size, self._progress = batch_size, progress
        return self._vectors(texts)

    def _embed_new(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = Embedder.embed(
            self, texts, batch_size=self._batch_size, progress=self._progress
        )
        return out
