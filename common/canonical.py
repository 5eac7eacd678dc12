"""Canonical JSON: one byte string per value, so hashes and signatures are reproducible.

Two encodings, each for what it was first hashed into (a hash never changes its encoding):

- `jcs`: RFC 8785, the JSON Canonicalization Scheme. Numbers are written as ECMAScript writes
  them (`1`, `0.000001`, `1e+21`), keys sorted by UTF-16 code units, integers within +-(2^53 - 1).
  Anything another language must reproduce uses it: package manifests from format v2 on, the
  profile id (v2) and the key-registration proof (docs/verify-any-language.md).
- `canonical_json`: lmdock's first form, Python's `json.dumps` with sorted keys (`1.0`,
  `1e-06`). It stays for what was hashed with it: v1 manifests and the v1 (legacy) profile id,
  and the privacy ledger's lines, whose hash chain covers each line's bytes as written.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785
from lmdock.common.errors import InvalidArgument

__all__ = ["canonical_json", "jcs", "sha256_hex"]


def jcs(value: Any) -> bytes:
    """The RFC 8785 encoding of `value`; InvalidArgument for a value it cannot hold (NaN or
    infinity, an integer beyond +-(2^53 - 1), a lone surrogate, a key that is not a string)."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise InvalidArgument(f"not representable in canonical JSON (RFC 8785): {exc}") from None


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys, no whitespace and no NaN/Infinity (the v1 form)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
