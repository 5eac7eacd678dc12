"""The header of a stranger's safetensors file, read where the file lies (inside a package's tar).

A safetensors file is 8 bytes of little-endian header length n, n bytes of UTF-8 JSON
(`{name: {"dtype", "shape", "data_offsets": [start, end]}}` plus an optional `__metadata__`
of strings), then the tensors' bytes. `read_header` refuses everything safetensors' own
loader (`safe_open`, 0.8) refuses, and a little more:

* n over 100 MB, or running past the file's end;
* a header that is not UTF-8 JSON of that shape: a shape or offset that is not an integer in
  [0, 2^64), not exactly two offsets, `__metadata__` values that are not strings,
  NaN/Infinity, a lone UTF-16 surrogate;
* offsets that do not tile the data: taken in offset order, each tensor starts where the
  previous one ends, and the last one ends exactly at the file's end;
* a tensor whose byte count is not its element count times its dtype's size.

Refused here and accepted by `safe_open`: a key twice (JSON keeps the last), a tensor entry
with keys besides those three, and any dtype but the floats an adapter holds (`FLOAT_BYTES`:
the NaN/Inf scan can test floats only; safetensors' other dtypes are refused with them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, BinaryIO

from lmdock.common.errors import InvalidArgument

__all__ = ["FLOAT_BYTES", "MAX_HEADER_BYTES", "SafetensorsHeader", "Tensor", "read_header"]

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
#: The float dtypes an adapter may hold, and their sizes in bytes.
FLOAT_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_USIZE_END = 2**64


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # one of FLOAT_BYTES
    shape: tuple[int, ...]
    start: int  # offsets into the data, which begins at `SafetensorsHeader.data_offset`
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: tuple[Tensor, ...]  # in the header's order
    data_offset: int  # where the tensors' bytes begin, counted from the start of the container


def read_header(fh: BinaryIO, *, start: int, size: int, name: str) -> SafetensorsHeader:
    """The checked header of the safetensors file of `size` bytes at `start` in `fh`."""

    def invalid(reason: str) -> InvalidArgument:
        return InvalidArgument(f"{name} is not a valid safetensors file: {reason}")

    if size < 8:
        raise invalid("it is shorter than its 8-byte header length")
    fh.seek(start)
    length = int.from_bytes(fh.read(8), "little")
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise invalid(
            f"a header of {length} bytes does not fit (file {size} bytes, limit {MAX_HEADER_BYTES})"
        )
    raw = fh.read(length)
    if len(raw) != length:
        raise invalid("the header is cut short")
    header = _parse(raw, invalid)
    tensors = tuple(
        _tensor(key, entry, name, invalid) for key, entry in header.items() if key != "__metadata__"
    )
    metadata = header.get("__metadata__")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise invalid("__metadata__ must map strings to strings")
    covered = 0
    for tensor in sorted(tensors, key=lambda t: (t.start, t.end)):
        if tensor.start != covered or tensor.end < tensor.start:
            raise invalid(f"invalid offsets for tensor {tensor.name!r}")
        covered = tensor.end
        needed = math.prod(tensor.shape) * FLOAT_BYTES[tensor.dtype]
        if needed != tensor.end - tensor.start:
            raise invalid(
                f"tensor {tensor.name!r} holds {tensor.end - tensor.start} bytes; "
                f"its shape and dtype need {needed}"
            )
    if 8 + length + covered != size:
        raise invalid(f"its tensors cover {covered} bytes of the {size - 8 - length} after the header")
    return SafetensorsHeader(tensors=tensors, data_offset=start + 8 + length)


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice")
    return out


def _refuse_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _parse(raw: bytes, invalid: Any) -> dict[str, Any]:
    try:
        header = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
        # JSON's \ud800 escapes decode to lone surrogates, which are no UTF-8 (safe_open refuses them)
        json.dumps(header, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise invalid(f"its header is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise invalid("its header is nested too deeply") from None
    if not isinstance(header, dict):
        raise invalid("its header is not a JSON object")
    return header


def _usizes(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _USIZE_END for v in value
    )


def _tensor(key: str, entry: Any, name: str, invalid: Any) -> Tensor:
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        raise invalid(f"tensor {key!r} must have exactly the keys {sorted(_ENTRY_KEYS)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in FLOAT_BYTES:  # only floats can be tested for NaN
        raise InvalidArgument(
            f"{name}: tensor {key!r} has dtype {str(dtype)[:40]}; adapters hold floats only "
            f"({', '.join(FLOAT_BYTES)})"
        )
    if not _usizes(shape):
        raise invalid(f"tensor {key!r}: its shape must be a list of non-negative integers")
    if not _usizes(offsets) or len(offsets) != 2:
        raise invalid(f"tensor {key!r}: data_offsets must be two non-negative integers")
    return Tensor(name=key, dtype=dtype, shape=tuple(shape), start=offsets[0], end=offsets[1])
