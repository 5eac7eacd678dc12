"""A stopped embedding resumes from the chunks it saved; other texts or a torn chunk start clean."""

from __future__ import annotations

import numpy as np
import pytest
from lmdock.client.embedder import Embedder
from lmdock.client.embedding_checkpoint import discard, embed_resumably

from tests.daemon_support import lab_texts


class Stop(Exception):
    pass


def test_a_stopped_embedding_resumes_where_it_was(profile, tmp_path) -> None:
    embedder = Embedder(profile)
    texts = lab_texts("medquad", 40)
    path = tmp_path / "state" / "embedding" / "t.f32"
    seen: list[int] = []

    def stop_in_the_second_chunk(done: int, total: int) -> None:
        seen.append(done)
        if done > 16:
            raise Stop

    with pytest.raises(Stop):
        embed_resumably(embedder, texts, path, progress=stop_in_the_second_chunk, chunk=16)
    assert path.stat().st_size == 16 * profile.embedding_dim * 4  # one whole chunk kept
    assert path.stat().st_mode & 0o077 == 0 and path.with_suffix(".json").stat().st_mode & 0o077 == 0

    with path.open("ab") as torn:  # a kill in the middle of writing a chunk
        torn.write(b"\0" * 100)
    resumed: list[int] = []
    vectors = embed_resumably(embedder, texts, path, progress=lambda d, t: resumed.append(d), chunk=16)
    assert resumed[0] == 16 and resumed[-1] == 40  # the first chunk was not embedded again
    np.testing.assert_allclose(vectors, embedder.embed(texts), atol=1e-5)

    other = embed_resumably(embedder, texts[:20], path, chunk=16)  # other texts: from scratch
    np.testing.assert_allclose(other, vectors[:20], atol=1e-5)
    discard(path)
    assert not path.exists() and not path.with_suffix(".json").exists()
