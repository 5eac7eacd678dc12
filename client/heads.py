"""How a classification learnware turns an encoder's output into logits (`TaskInfo.pooling`).

* "cls": the architecture's own sequence-classification head, `model(**batch).logits` (BERT:
  a pooler over the [CLS] state, then the `classifier` layer);
* "mean": the same `classifier` layer over the attention-masked mean of the last hidden
  states, m(x) = Σ_t mask_t h_t / Σ_t mask_t (not normalised). Mean-pooled states are what
  sentence encoders such as all-MiniLM-L6-v2 are trained to make meaningful, so a linear head
  on them learns from far fewer, noisier gradients: DP builds train only that head.

The head keeps the architecture's `classifier` name and shape, so packages, PEFT's loading and
the market's shape checks are the same for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lmdock.common.errors import InvalidArgument

__all__ = ["check_mean_pooling", "classification_logits", "mean_features"]


def _parts(model: Any) -> tuple[Any, Any]:
    """(encoder, classifier) of a PEFT-wrapped or bare *ForSequenceClassification model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    encoder = getattr(base, getattr(base, "base_model_prefix", ""), None)
    return encoder, getattr(base, "classifier", None)


def check_mean_pooling(model: Any) -> None:
    """Refuse architectures whose classifier is not one linear layer over the hidden size."""
    encoder, classifier = _parts(model)
    layer = getattr(classifier, "modules_to_save", {}).get("default", classifier)  # peft's copy
    hidden = getattr(getattr(encoder, "config", None), "hidden_size", None)
    if encoder is None or not isinstance(layer, torch.nn.Linear) or layer.in_features != hidden:
        raise InvalidArgument(
            "this base model's classification head is not a single linear layer over its hidden "
            "states, so it cannot be trained as a mean-pooled linear head (DP classification)"
        )


def mean_features(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The attention-masked mean of the encoder's last hidden states, one row per text."""
    encoder, _ = _parts(model)
    hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def classification_logits(model: Any, batch: Mapping[str, torch.Tensor], pooling: str) -> torch.Tensor:
    if pooling == "cls":
        logits: torch.Tensor = model(**batch).logits
        return logits
    _, classifier = _parts(model)
    logits = classifier(mean_features(model, batch))
    return logits
