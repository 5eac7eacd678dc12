"""Whether every value of a safetensors file's float tensors is finite, read in place.

The file is memory-mapped and each tensor's bytes are viewed as their dtype (bfloat16 as its
bit pattern: NaN and Inf are the values whose exponent bits are all ones), a block at a time:
nothing is copied but one block's verdicts, and the scan runs on the calling thread alone.
The upload checker runs one scan per upload on a worker thread, so concurrent uploads share
the cores between them instead of each one's tensor library starting a thread per core
(measured: torch's `isfinite` on its default 2 threads of a loaded 2-core box, 1.4 s for
100 MB; this scan, 0.03-0.07 s: docs/performance.md).

`safe_open` must have accepted the file first: it checks that the header's offsets lie
within the file and match each tensor's dtype and shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["FLOAT_DTYPES", "non_finite_tensor"]

#: safetensors float dtypes and how their bytes are viewed (None: bfloat16, by its bits).
FLOAT_DTYPES: dict[str, str | None] = {"F16": "<f2", "BF16": None, "F32": "<f4", "F64": "<f8"}
_BLOCK_BYTES = 16 * 1024 * 1024
_BF16_EXPONENT = 0x7F80


def non_finite_tensor(path: Path, *, block_bytes: int = _BLOCK_BYTES) -> str | None:
    """The name of the first tensor (in header order) holding NaN or Inf, else None."""
    with path.open("rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_len))
    if path.stat().st_size == 8 + header_len:  # empty tensors only (nothing to map)
        return None
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    try:
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            start, end = meta["data_offsets"]
            view = FLOAT_DTYPES[meta["dtype"]]
            itemsize = 2 if view is None else np.dtype(view).itemsize
            block = block_bytes - block_bytes % itemsize
            for at in range(start, end, block):
                raw = data[at : min(at + block, end)]
                if view is None:
                    bad = bool(((raw.view("<u2") & _BF16_EXPONENT) == _BF16_EXPONENT).any())
                else:
                    bad = not bool(np.isfinite(raw.view(view)).all())
                if bad:
                    return str(name)
    finally:
        del data  # unmaps: the caller may delete the file next
    return None
