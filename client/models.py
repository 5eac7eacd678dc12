"""Model libraries as lmdock uses them: base models from local files only (no hub), quietly."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from lmdock.common.base_model_files import PACKAGED_BASE_MODELS, packaged_base_dir
from lmdock.common.embedder_files import embedder_dir
from lmdock.common.errors import FailedPrecondition

__all__ = ["quiet_model_libraries", "resolve_base_model"]


def resolve_base_model(name: str) -> Path:
    """A local folder for `name`: a packaged model, a path on disk, or a HF cache entry."""
    if name in PACKAGED_BASE_MODELS:
        return packaged_base_dir(name)
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


def quiet_model_libraries() -> None:
    """Model libraries warn loudly about things a user cannot act on; keep the CLI readable."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(peft|transformers|torch)\.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # read when transformers is first imported: set, not imported, so a CLI mistake stays fast
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (a test, the lab): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
