"""Reading a user's text file whole, with errors that say what is wrong and how to fix it."""

from __future__ import annotations

import codecs
from pathlib import Path

from lmdock.common.errors import InvalidArgument

__all__ = ["check_text_encoding", "read_utf8"]

_SNIFF_BYTES = 8192


def check_text_encoding(path: Path) -> None:
    """Refuse a missing, empty, UTF-16/32 or binary file from its first bytes."""
    if not path.is_file():
        raise InvalidArgument(f"task file {path} does not exist (or is not a regular file)")
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head:
        raise InvalidArgument(f"task file {path} is empty")
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InvalidArgument(f"{path} is UTF-32 encoded; save it as UTF-8")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InvalidArgument(
            f"{path} is UTF-16 encoded; save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8 {path} > out`)"
        )
    if b"\x00" in head:
        raise InvalidArgument(f"{path} looks like a binary file, not text (it contains NUL bytes)")


def read_utf8(path: Path, *, max_bytes: int) -> str:
    """The file's text (a UTF-8 byte order mark is dropped); refuses files over `max_bytes`."""
    check_text_encoding(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidArgument(
            f"{path} is {size} bytes, more than the limit of {max_bytes}; use a sample of the task data"
        )
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InvalidArgument(
            f"{path} is not UTF-8: byte 0x{raw[exc.start]:02x} on line {line} ({exc.reason}); "
            f"convert it, e.g. `iconv -f latin1 -t UTF-8 {path} > out`"
        ) from None
