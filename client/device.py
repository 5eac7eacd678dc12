"""Choice of torch device and thread count for local inference and training."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(requested: str = "auto") -> torch.device:
    """cuda if available, then mps, then cpu; or exactly `requested`."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
