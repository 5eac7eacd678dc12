"""The pinned embedder as a TorchScript program, traced once into the model cache.

Why: a CLI search spends most of its time before the first text is embedded. Importing
transformers and building its BertModel costs 3–4 s on a 2-core box; torch alone is ~2 s. A
traced program holds the same graph and weights and loads with torch alone in ~0.2 s, so every
search after the first skips transformers (docs/performance.md, "CLI latency").

TorchScript rather than torch.export, which torch now recommends: loading an exported program
imports the compiler stack and took 3.4–4.1 s here against 0.2 s, the whole saving. torch marks
`torch.jit` deprecated; if a release drops it, tracing fails and the eager model is used.

The trace is kept only if it equals the eager model on probe batches of several shapes (batch
1–3, length 2 to the model's longest input), and it is named by the weights' sha256 and the
torch and transformers versions that made it: an upgrade of either traces again. The file is the same
trust as the converted base models beside it (the user's own model cache, owner-only).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lmdock.client.files import private_dir
from lmdock.common.base_model_files import model_cache_root

__all__ = ["Encoder", "eager_encoder", "load_encoder", "program_path"]

log = logging.getLogger(__name__)

#: Largest difference from the eager model a kept trace may show on a probe (float32 noise).
_TOLERANCE = 1e-5


class Encoder(torch.nn.Module):
    """(input ids, attention mask) -> last hidden state: the one signature both forms share."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def eager_encoder(folder: Path) -> Encoder:
    from transformers import AutoModel

    return Encoder(AutoModel.from_pretrained(folder, dtype=torch.float32)).eval()


def program_path(weights_sha256: str) -> Path:
    versions = f"torch{torch.__version__}-transformers{importlib.metadata.version('transformers')}"
    return model_cache_root() / "embedder-programs" / f"{weights_sha256[:16]}-{versions}.pt"


def load_encoder(folder: Path, weights_sha256: str) -> torch.nn.Module:
    """The embedder on CPU: its traced program from the cache, traced and kept on first use (the
    eager model when a trace does not reproduce it)."""
    path = program_path(weights_sha256)
    if path.is_file():
        try:
            with _deprecation_noted():
                return torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, OSError) as error:  # a damaged file: trace it again
            log.warning("the embedder's program %s does not load (%s); tracing it again", path.name, error)
            path.unlink(missing_ok=True)
    eager = eager_encoder(folder)
    try:
        with _deprecation_noted():
            program = _trace(eager)
    except (RuntimeError, AttributeError) as error:  # a torch that cannot trace this model
        log.warning("the embedder could not be traced (%s); using the model itself", error)
        return eager
    if program is None:
        log.warning("the embedder's trace differs from the model; using the model itself")
        return eager
    private_dir(path.parent)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".trace-", suffix=".pt")
    os.close(fd)
    try:
        with _deprecation_noted():
            torch.jit.save(program, temporary)
        os.replace(temporary, path)  # a concurrent first use writes the same program: either wins
    finally:
        Path(temporary).unlink(missing_ok=True)
    return program


@contextlib.contextmanager
def _deprecation_noted() -> Iterator[None]:
    """torch.jit's deprecation warning, silenced where this module chose it (see above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
        yield


@torch.no_grad()
def _trace(eager: Encoder) -> torch.jit.ScriptModule | None:
    generator = torch.Generator().manual_seed(0)

    def probe(batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(1000, 30000, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, max(1, length // 2) :] = 0  # right padding, as the tokenizer pads
        return ids, mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side shape checks
        program = torch.jit.trace(eager, probe(2, 8), strict=False)
    config: Any = getattr(eager.model, "config")  # noqa: B009 (a transformers model's config)
    longest = int(config.max_position_embeddings)
    for shape in ((1, 2), (3, 17), (2, longest)):
        ids, mask = probe(*shape)
        if (program(ids, mask) - eager(ids, mask)).abs().max().item() > _TOLERANCE:
            return None
    return program
