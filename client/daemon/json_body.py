"""A request body parsed as one JSON object, its nesting bounded before the parser sees it.

Python's json parser recurses once per level, so a body of a few thousand "[" reaches the
interpreter's recursion limit; the depth is counted first (strings, where brackets mean
nothing, are blanked out), and a body deeper than `MAX_DEPTH` is refused like any invalid one.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from lmdock.common.errors import InvalidArgument

__all__ = ["MAX_DEPTH", "nesting_depth", "parse_json_object"]

MAX_DEPTH = 32  # an OpenAI body nests 4-6 levels (a chat's content parts); tool schemas a few more
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in `raw` (exact for valid JSON)."""
    brackets = np.frombuffer(_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS), dtype=np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if nesting_depth(raw) > MAX_DEPTH:
        raise InvalidArgument(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        body = json.loads(raw)
    except ValueError as exc:  # bad JSON, bad UTF-8, or an integer of over 4300 digits
        raise InvalidArgument(f"the body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object")
    return body
