"""Resolving a base model name to local files (no model hub at run time)."""

from __future__ import annotations

from pathlib import Path

from lmdock.common.embedders import embedder_dir
from lmdock.common.errors import FailedPrecondition

__all__ = ["resolve_base_model"]


def resolve_base_model(name: str) -> Path:
    """A local folder for `name`: a packaged model, a path on disk, or a HF cache entry."""
    try:
        return embedder_dir(name)
    except FailedPrecondition:
        pass
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise FailedPrecondition(
            f"base model {name!r} is not available locally: pass a local checkpoint folder "
            "(e.g. a downloaded Qwen2.5 directory) or pre-download it into the Hugging Face cache"
        ) from None
