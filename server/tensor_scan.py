"""Whether every value of a safetensors file's float tensors is finite, read in place.

The file (or the package tar holding it) is memory-mapped and each tensor's bytes are viewed
as their dtype (bfloat16 as its bit pattern: NaN and Inf are the values whose exponent bits
are all ones), a block at a time:
nothing is copied but one block's verdicts, and the scan runs on the calling thread alone.
The upload checker runs one scan per upload on a worker thread, so concurrent uploads share
the cores between them instead of each one's tensor library starting a thread per core
(measured: torch's `isfinite` on its default 2 threads of a loaded 2-core box, 1.4 s for
100 MB; this scan, 0.03-0.07 s: docs/performance.md).

`safetensors_header.read_header` must have accepted the header first: it checks that the
offsets lie within the file and match each tensor's dtype and shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lmdock.server.safetensors_header import FLOAT_BYTES, SafetensorsHeader

__all__ = ["non_finite_tensor"]

#: How each float dtype's bytes are viewed (bfloat16, which numpy lacks, by its bits).
_VIEWS = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}
_BLOCK_BYTES = 16 * 1024 * 1024
_BF16_EXPONENT = 0x7F80


def non_finite_tensor(
    path: Path, header: SafetensorsHeader, *, block_bytes: int = _BLOCK_BYTES
) -> str | None:
    """The name of the first tensor (in header order) holding NaN or Inf, else None.

    `path` holds the safetensors file whose checked `header` this is, at its offsets."""
    length = max((t.end for t in header.tensors), default=0)
    if length == 0:  # empty tensors only (nothing to map)
        return None
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=header.data_offset, shape=(length,))
    try:
        for tensor in header.tensors:
            view = _VIEWS.get(tensor.dtype)
            itemsize = FLOAT_BYTES[tensor.dtype]
            block = block_bytes - block_bytes % itemsize
            for at in range(tensor.start, tensor.end, block):
                raw = data[at : min(at + block, tensor.end)]
                if view is None:
                    bad = bool(((raw.view("<u2") & _BF16_EXPONENT) == _BF16_EXPONENT).any())
                else:
                    bad = not bool(np.isfinite(raw.view(view)).all())
                if bad:
                    return tensor.name
    finally:
        del data  # unmaps: the caller may delete the file next
    return None
