"""The pinned sentence embedder: texts -> unit vectors, as the spec profile prescribes.

Mean pooling over the last hidden state (attention-masked), truncation at the profile's token
limit, float32, then L2 normalisation — the recipe of all-MiniLM-L6-v2. Texts are tokenized by
the model's own fast-tokenizer file (the `tokenizers` library transformers wraps), and on CPU
the model runs as its traced program (`embedder_program`): neither needs transformers imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from lmdock.client.embedder_program import eager_encoder, load_encoder
from lmdock.client.progress import Progress
from lmdock.common.embedder_files import embedder_dir, embedder_sha256
from lmdock.common.errors import FailedPrecondition, ProfileMismatch
from lmdock.common.profile import SpecProfile
from tokenizers import Tokenizer

__all__ = ["Embedder", "fast_tokenizer", "mean_pool"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean of token vectors, L2-normalised."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def fast_tokenizer(folder: Path, *, max_tokens: int) -> Tokenizer:
    """The folder's tokenizer.json, cutting at `max_tokens` and padding each batch to its longest
    text on the right (what transformers' tokenizer call does with these options)."""
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise FailedPrecondition(
            f"embedder folder {folder} has no tokenizer.json; save its fast tokenizer there "
            "(transformers: AutoTokenizer.from_pretrained(folder).save_pretrained(folder))"
        )
    tokenizer = Tokenizer.from_file(str(file))
    padding = tokenizer.padding or {}
    tokenizer.enable_truncation(max_tokens)
    tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"))
    return tokenizer


class Embedder:
    def __init__(self, profile: SpecProfile, *, device: torch.device | None = None) -> None:
        """Load the profile's embedder; refuse it unless its weights hash to the profile's."""
        local = embedder_sha256(profile.embedder_id)
        if local != profile.embedder_sha256:
            raise ProfileMismatch(
                f"local embedder {profile.embedder_id!r} has weight hash {local[:16]}…, the market's "
                f"profile expects {profile.embedder_sha256[:16]}…; specs would not be comparable"
            )
        folder = embedder_dir(profile.embedder_id)
        self.profile = profile
        self.device = device or torch.device("cpu")
        self.tokenizer = fast_tokenizer(folder, max_tokens=profile.max_tokens)
        if self.device.type == "cpu":
            self.model = load_encoder(folder, local)
        else:  # a trace on CPU may hold CPU-only constants; start-up is not a GPU's bottleneck
            self.model = eager_encoder(folder).to(self.device)

    @torch.inference_mode()
    def embed(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: Progress | None = None
    ) -> npt.NDArray[np.float32]:
        """(len(texts), embedding_dim) unit vectors."""
        out = np.empty((len(texts), self.profile.embedding_dim), dtype=np.float32)
        # Sorting by length keeps padding (and time) down; results go back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            encoded = self.tokenizer.encode_batch([texts[i] for i in idx])
            ids = torch.tensor([e.ids for e in encoded], device=self.device)
            mask = torch.tensor([e.attention_mask for e in encoded], device=self.device)
            with torch.jit.optimized_execution(False):  # a one-off run gains nothing from profiling
                hidden = self.model(ids, mask)
            out[idx] = mean_pool(hidden, mask).float().cpu().numpy()
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        return out
