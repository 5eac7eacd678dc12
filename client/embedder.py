"""The pinned sentence embedder: texts -> unit vectors, as the spec profile prescribes.

Mean pooling over the last hidden state (attention-masked), truncation at the profile's token
limit, float32, then L2 normalisation — the recipe of all-MiniLM-L6-v2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from lmdock.client.progress import Progress
from lmdock.common.embedder_files import embedder_dir, embedder_sha256
from lmdock.common.errors import ProfileMismatch
from lmdock.common.profile import SpecProfile
from transformers import AutoModel, AutoTokenizer

__all__ = ["Embedder", "mean_pool"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean of token vectors, L2-normalised."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


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
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).to(self.device).eval()

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
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.profile.max_tokens,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            out[idx] = mean_pool(hidden, batch["attention_mask"]).float().cpu().numpy()
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        return out
