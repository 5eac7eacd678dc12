"""Choice of torch device and dtype for local inference and training."""

from __future__ import annotations

import torch
from lmdock.common.errors import FailedPrecondition, InvalidArgument

__all__ = ["pick_device", "pick_dtype"]


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(requested: str = "auto") -> torch.device:
    """cuda if available, then mps, then cpu; or exactly `requested`, if this machine has it."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise InvalidArgument(f"device must be auto, cpu, mps or cuda[:N], not {requested!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FailedPrecondition(
                f"device {requested!r} was asked for, but this torch build ({torch.__version__}) sees no "
                "CUDA GPU: install a CUDA build of torch (see docs/daemon.md) or use device auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise FailedPrecondition(
                f"device {requested!r} does not exist: this machine has {count} CUDA GPU(s)"
            )
    if device.type == "mps" and not _mps_available():
        raise FailedPrecondition(f"device {requested!r} was asked for, but Apple's MPS is not available here")
    return device


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on GPUs that support it, float16 on other GPUs, float32 on the cpu."""
    if requested == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    choices = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if requested not in choices:
        raise InvalidArgument(f"dtype must be auto, {', '.join(choices)}; not {requested!r}")
    if requested == "float16" and device.type == "cpu":
        raise InvalidArgument("float16 is not supported on the cpu: use float32 or bfloat16")
    return choices[requested]
