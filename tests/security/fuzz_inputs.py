"""Hostile inputs for every MarketService RPC and for the package checker (hypothesis strategies).

One copy serves the fuzz suite (`tests/security/test_fuzz.py`, a short deterministic run) and
its long run (`benchmarks/fuzz.py`). Requests are drawn from the proto descriptor, so a new
RPC or field is fuzzed with no change here; `Known` steers some fields towards values the
market holds (its profile, learnware ids, key ids, a valid package), so that a share of the
calls passes the first checks and reaches the code behind them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import math
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st
from lmdock.common.profile import MAX_SIGMA, SpecProfile
from lmdock.common.spec import norm_bounds
from lmdock.v1 import market_pb2 as pb

__all__ = [
    "METHODS",
    "Known",
    "PackageParts",
    "mutated_packages",
    "raw_requests",
    "requests",
    "upload_streams",
    "whole_upload",
]

SERVICE = pb.DESCRIPTOR.services_by_name["MarketService"]
#: Every RPC of the service, from the descriptor: a new one is fuzzed without a change here.
METHODS = {m.name: m for m in SERVICE.methods}

NAN, INF = float("nan"), float("inf")
EDGE_FLOATS = (
    *(0.0, -0.0, 5e-324, 1e-45, 1e-300, 1.0, -1.0, 0.5, 1000.0, 1000.0001),
    *(3.4e38, -3.4e38, 3.5e38, -3.5e38, 1e155, -1e155, 1e308, -1e308, 1.7976931348623157e308),
    *(NAN, INF, -INF),
)
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT_TYPES = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
#: Texts that have broken parsers, paths and queries elsewhere.
NASTY_TEXTS = (
    *("", " ", "\0", "a\0b", "..", "../../etc/passwd", "/abs", "C:\\x", "%s%n%x", "{}", "[]", "null"),
    *("'; DROP TABLE learnwares; --", "\u202e", "\ufeff", "𝕏" * 64, "a" * 64, "a" * 65, "A" * 257),
    *("lmk_", "lmk_000000000000_" + "A" * 43, "after:", "YWZ0ZXI6", "0" * 64, "f" * 16),
)
#: Long strings: some under the market's 4 MiB message limit, one over it.
_HUGE_TEXTS = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["a", "\0", "é", "𝕏", "../"]),
    st.sampled_from([300, 70_000, 1_100_000]),
)


def floats() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(EDGE_FLOATS), st.floats())


def integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted(
        {v for v in (lo, lo + 1, -1, 0, 1, 2, 255, 256, 2**31 - 1, 2**32 - 1, hi - 1, hi) if lo <= v <= hi}
    )
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def texts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NASTY_TEXTS), st.text(max_size=40), _HUGE_TEXTS)


def binaries() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=100),
        st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.sampled_from([64, 70_000])),
    )


@dataclass(frozen=True)
class Known:
    """What the market holds that a caller may name: fields drawn partly from these get past
    the first checks. For the RPCs that change the market the harness leaves out what the
    caller could change (a publisher's own keys; for an admin, every id), so that a fuzzed call
    never succeeds at altering the market's seed."""

    profile: SpecProfile
    learnware_ids: tuple[str, ...] = ()
    key_ids: tuple[str, ...] = ()
    publishers: tuple[str, ...] = ()
    public_keys: tuple[str, ...] = ()


def _sometimes(values: tuple[str, ...], generic: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), generic) if values else generic


@st.composite
def plausible_specs(draw: st.DrawFn, profile: SpecProfile) -> pb.Spec:
    """A spec of the market's profile and dimension, its norm at the edges of what its sigma
    explains, some values at float edges: the search, norm checks and mixture get exercised."""
    honest = draw(st.integers(0, 3)) > 0  # most draws get past the checks, to the ranking
    sigmas = st.sampled_from((0.0, 1e-300, 1e-6, 0.3, profile.max_sigma, 21.0, 999.9, MAX_SIGMA))
    sigma = draw(sigmas if honest else floats())
    usable = sigma if math.isfinite(sigma) and 0 <= sigma <= MAX_SIGMA else 1.0
    low, high = norm_bounds(usable, profile)
    norms = (low, high, (low + high) / 2) if honest else (0.0, high * 1.001, low * 0.999)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    direction = rng.standard_normal(profile.feature_dim)
    values = direction / np.linalg.norm(direction) * draw(st.sampled_from(norms))
    for _ in range(0 if honest else draw(st.integers(1, 3))):
        values[draw(st.integers(0, profile.feature_dim - 1))] = draw(floats())
    epsilon = draw(st.one_of(st.sampled_from((0.0, 0.01, 1.0, 8.0, 1e9)), floats())) if sigma else 0.0
    delta = st.sampled_from((0.0, 1e-6, 0.5)) if honest else st.one_of(st.sampled_from((1.0, -1.0)), floats())
    return pb.Spec(
        version=profile.version,
        profile_id=profile.profile_id,
        values=values.tolist(),
        privacy=pb.Privacy(
            epsilon=epsilon,
            delta=draw(delta),
            sigma=sigma,
            size_bucket=draw(integers(0, 2**32 - 1)),
            neighbouring=draw(st.sampled_from(("replace-one", "") if honest else ("add-remove", "x"))),
            unit=draw(st.sampled_from(("record", "person", "") if honest else ("household", "\0"))),
        ),
    )


@st.composite
def _public_keys(draw: st.DrawFn) -> str:
    raw = draw(st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)))
    return base64.b64encode(raw).decode("ascii")


def _hints(known: Known) -> dict[str, st.SearchStrategy[Any]]:
    """Strategies mixed into the generic ones: by message type (full name) or by field name."""
    hex_ids = st.text("0123456789abcdef", min_size=16, max_size=16)
    return {
        "lmdock.v1.Spec": plausible_specs(known.profile),
        "learnware_id": _sometimes(known.learnware_ids, texts()),
        "key_id": _sometimes(known.key_ids, hex_ids),
        "publisher": _sometimes(known.publishers, texts()),
        "public_key": st.one_of(_public_keys(), _sometimes(known.public_keys, texts())),
        "proof": st.one_of(st.binary(min_size=64, max_size=64), binaries()),
        "sha256": st.one_of(st.text("0123456789abcdef", min_size=64, max_size=64), texts()),
        "page_token": st.one_of(
            st.sampled_from(("YWZ0ZXI6", "YWZ0ZXI6" + "YQ" * 100, "!!!!", "YWZ0ZXI6AA==")), texts()
        ),
    }


def _scalars(field: FieldDescriptor, *, short: bool) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        return integers(*_INT_RANGES[kind])
    if kind in _FLOAT_TYPES:
        return floats()
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16) if short else binaries()
    return st.text(max_size=8) if short else texts()  # TYPE_STRING


def _field_values(
    field: FieldDescriptor, hints: dict[str, st.SearchStrategy[Any]], depth: int
) -> st.SearchStrategy[Any]:
    """One value (a list or a dict for repeated and map fields) for `field`."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return st.dictionaries(_scalars(key, short=True), _single(value, hints, depth), max_size=8)
    one = _single(field, hints, depth)
    if not field.is_repeated:
        return one
    if field.message_type is not None:
        return st.lists(one, max_size=6)
    short = _scalars(field, short=True)
    return st.one_of(  # short lists of anything, long lists (10^5 and more) of small values
        st.lists(one, max_size=8),
        st.builds(lambda x, n: [x] * n, short, st.sampled_from([383, 384, 385, 10_000, 300_000])),
    )


def _single(
    field: FieldDescriptor, hints: dict[str, st.SearchStrategy[Any]], depth: int
) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        generic = messages(field.message_type, hints, depth + 1)
        hint = hints.get(field.message_type.full_name)
    else:
        generic = _scalars(field, short=False)
        hint = hints.get(field.name)
    return st.one_of(hint, generic) if hint is not None else generic


def messages(
    descriptor: Descriptor, hints: dict[str, st.SearchStrategy[Any]], depth: int = 0
) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` with every field absent or drawn (at most one per oneof)."""
    cls = GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    plain = [f for f in descriptor.fields if f.containing_oneof is None]
    values = {f.name: _field_values(f, hints, depth) for f in plain}
    oneofs = [
        st.one_of(st.none(), *(st.tuples(st.just(f.name), _field_values(f, hints, depth)) for f in o.fields))
        for o in descriptor.oneofs
    ]

    def build(fields: dict[str, Any], chosen: list[tuple[str, Any] | None]) -> Message:
        message = cls()
        for name, value in [*fields.items(), *(c for c in chosen if c)]:
            _assign(message, descriptor.fields_by_name[name], value)
        return message

    return st.builds(build, st.fixed_dictionaries({}, optional=values), st.tuples(*oneofs).map(list))


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        for k, v in value.items():
            if field.message_type.fields_by_name["value"].message_type is not None:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif field.is_repeated:
        target.extend(value)
    elif field.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def requests(method: str, known: Known) -> st.SearchStrategy[list[bytes]]:
    """Well-formed request messages for `method` with drawn fields, encoded: one for a unary
    request, a short stream for a streaming one."""
    descriptor = METHODS[method]
    drawn = messages(descriptor.input_type, _hints(known)).map(lambda m: m.SerializeToString())
    if descriptor.client_streaming:
        return st.lists(drawn, min_size=0, max_size=4)
    return drawn.map(lambda b: [b])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _nested(depth: int) -> bytes:
    """Field 1 (length-delimited) nested `depth` times: past protobuf's recursion limit at 100."""
    inner = b""
    for _ in range(depth):
        inner = b"\x0a" + _varint(len(inner)) + inner
    return inner


@st.composite
def _mangled(draw: st.DrawFn, method: str, known: Known) -> bytes:
    """A valid encoding, then cut, flipped, spliced or repeated."""
    data = bytearray(b"".join(draw(requests(method, known))[:1]) or b"\x08\x01")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(("cut", "flip", "insert", "repeat")))
        if how == "cut":
            del data[at:]
        elif how == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[:at]
    return bytes(data)


_WIRE_TRICKS = (
    b"\xff\xff\xff\xff\x0f",  # a truncated varint
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
    b"\x0b\x0b\x0b",  # unbalanced group starts
    b"\x0c",  # a group end with no start
    b"\x08" + b"\xff" * 10 + b"\x01",  # a varint of 11 bytes
    b"\x12\x02\xff\xfe",  # field 2 of two bytes that are no UTF-8
    b"\xfa\xff\xff\xff\x0f\x00",  # field number 2^29 - 1 ... with a bad wire type
)


def raw_requests(method: str, known: Known) -> st.SearchStrategy[list[bytes]]:
    """Request bytes that are mostly not the RPC's message (random, mangled, nested too deep)."""
    one = st.one_of(
        st.binary(max_size=64),
        st.sampled_from(_WIRE_TRICKS),
        st.sampled_from([_nested(99), _nested(101), _nested(5000)]),
        _mangled(method, known),
    )
    if METHODS[method].client_streaming:
        return st.lists(one, min_size=1, max_size=3)
    return one.map(lambda b: [b])


@st.composite
def upload_streams(draw: st.DrawFn, package: bytes) -> list[bytes]:
    """Upload streams around a real package: header-less, wrong sha or size, chunks beyond the
    declared size, a header in the middle, empty parts, or the package with bytes flipped."""
    payload = bytearray(draw(st.one_of(st.just(package), st.binary(max_size=2000))))
    if payload and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            payload[draw(st.integers(0, len(payload) - 1))] ^= draw(st.integers(1, 255))
    digest = hashlib.sha256(payload).hexdigest()
    sha = draw(st.one_of(st.just(digest), st.sampled_from(("0" * 64, digest.upper(), digest[:63])), texts()))
    size = draw(
        st.one_of(
            st.just(len(payload)),
            st.sampled_from([0, len(payload) - 1, len(payload) + 1]),
            integers(0, 2**64 - 1),
        )
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    chunks = [bytes(payload[a:b]) for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    parts = [pb.UploadRequest(chunk=c) for c in chunks]
    header = pb.UploadRequest(header=pb.UploadHeader(sha256=sha, size=max(size, 0)))
    where = draw(st.sampled_from(("first", "none", "middle", "twice")))
    if where == "first":
        parts.insert(0, header)
    elif where == "middle":
        parts.insert(len(parts) // 2, header)
    elif where == "twice":
        parts[:0] = [header, header]
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), pb.UploadRequest())  # no part set
    if draw(st.booleans()):
        parts.append(pb.UploadRequest(chunk=draw(st.binary(min_size=1, max_size=64))))  # beyond size
    return [p.SerializeToString() for p in parts]


def whole_upload(archive: bytes) -> list[bytes]:
    """The Upload stream an honest client sends for `archive`: its header, then its bytes."""
    header = pb.UploadHeader(sha256=hashlib.sha256(archive).hexdigest(), size=len(archive))
    return [
        pb.UploadRequest(header=header).SerializeToString(),
        pb.UploadRequest(chunk=archive).SerializeToString(),
    ]


# -- packages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageParts:
    """A valid package taken apart: its manifest and signature as dicts, its other files' bytes,
    and a signer that signs a manifest dict (returning the signature dict) or raises."""

    manifest: dict[str, Any]
    signature: dict[str, Any]
    files: dict[str, bytes]
    sign: Callable[[dict[str, Any]], dict[str, Any]]

    @classmethod
    def read(cls, package: bytes, sign: Callable[[dict[str, Any]], dict[str, Any]]) -> PackageParts:
        with tarfile.open(fileobj=io.BytesIO(package)) as tar:
            data = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
        return cls(
            manifest=json.loads(data.pop("manifest.json")),
            signature=json.loads(data.pop("signature.json")),
            files=data,
            sign=sign,
        )


_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400)]),
    floats(),
    texts(),
)
json_values = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists (the root included)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value[:4]):  # a spec has 384 values: the first few will do
            found += _paths(inner, (*prefix, i))
    return found


@st.composite
def mutated_json(draw: st.DrawFn, value: Any) -> Any:
    """`value` (a JSON document) with one to three values replaced, removed or added."""
    value = json.loads(json.dumps(value))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(value)))
        if not path:
            return draw(json_values)
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(("replace", "replace", "remove", "add")))
        if how == "replace":
            parent[path[-1]] = draw(json_values)
        elif how == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(json_values)
        else:
            parent.append(draw(json_values))
        if not isinstance(value, dict | list):
            return value
    return value


def _dump_json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


_SAFETENSORS_DTYPES = (
    "F8_E4M3",
    "F8_E5M2",
    "I8",
    "U8",
    "BOOL",
    "I64",
    "F64",
    "F16",
    "BF16",
    "F32",
    "C64",
    "X",
    "",
)


@st.composite
def mutated_safetensors(draw: st.DrawFn, data: bytes) -> bytes:
    """A safetensors file with its header's dtypes, shapes, offsets or length prefix altered,
    or its data cut or overwritten (NaN bytes)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = bytearray(data[8 + length :])
    names = sorted(n for n in header if n != "__metadata__")
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        how = draw(st.sampled_from(("dtype", "shape", "offsets", "metadata", "drop", "json", "nan", "cut")))
        if how in ("dtype", "shape", "offsets", "metadata", "drop") and not (
            isinstance(header, dict) and isinstance(header.get(name), dict)
        ):
            continue  # an earlier mutation replaced the header or this tensor's entry
        if how == "dtype":
            header[name]["dtype"] = draw(st.one_of(st.sampled_from(_SAFETENSORS_DTYPES), json_values))
        elif how == "shape":
            header[name]["shape"] = draw(
                st.one_of(st.lists(integers(-(2**63), 2**64), max_size=4), json_values)
            )
        elif how == "offsets":
            header[name]["data_offsets"] = draw(
                st.one_of(st.lists(integers(-1, 2**64), min_size=2, max_size=2), json_values)
            )
        elif how == "metadata":
            header["__metadata__"] = draw(json_values)
        elif how == "drop" and len(header) > 1:
            del header[name]
        elif how == "json":
            header = draw(mutated_json(header))
        elif how == "nan" and body:
            at = draw(st.integers(0, len(body) - 1))
            body[at : at + 4] = b"\xff\xff\xff\x7f"
        elif how == "cut":
            del body[draw(st.integers(0, len(body))) :]
    raw = _dump_json(header)
    prefix = len(raw) if draw(st.integers(0, 3)) else draw(integers(0, 2**64 - 1))  # mostly honest
    return struct.pack("<Q", prefix) + raw + bytes(body)


_MEMBER_TYPES = (
    tarfile.REGTYPE,
    tarfile.AREGTYPE,
    tarfile.LNKTYPE,
    tarfile.SYMTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.DIRTYPE,
    tarfile.FIFOTYPE,
    tarfile.CONTTYPE,
    b"Z",
)
_MEMBER_NAMES = (
    *("manifest.json", "signature.json", "adapter_config.json", "adapter_model.safetensors"),
    *("README.md", "../x.json", "/etc/x.json", "a/b.json", "x.bin", "x.pt", ".json", "-x.json"),
    *("a" * 200 + ".json", "é.json", "x\0.json", ""),
)


@st.composite
def mutated_packages(draw: st.DrawFn, parts: PackageParts) -> bytes:
    """A package made from `parts` with its tar members, manifest, signature, adapter config or
    safetensors header mutated. The manifest is re-hashed and re-signed after a file changes
    (and after its own change, when it can still be signed), so that most mutations pass the
    integrity checks and reach the checker behind them."""
    manifest: Any = json.loads(json.dumps(parts.manifest))
    signature: Any = dict(parts.signature)
    files = dict(parts.files)
    targets = draw(
        st.lists(
            st.sampled_from(("manifest", "signature", "config", "weights", "members", "raw")),
            min_size=1,
            max_size=2,
        )
    )
    if "config" in targets:
        files["adapter_config.json"] = _dump_json(
            draw(mutated_json(json.loads(files["adapter_config.json"])))
        )
    if "weights" in targets:
        files["adapter_model.safetensors"] = draw(mutated_safetensors(files["adapter_model.safetensors"]))
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
        for name, data in files.items():
            if isinstance(manifest["files"].get(name), dict):
                manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    if "manifest" in targets:
        manifest = draw(mutated_json(manifest))
    with contextlib.suppress(ValueError, TypeError):  # no canonical JSON (NaN): keep the old one
        signature = parts.sign(manifest)
    if "signature" in targets:
        signature = draw(mutated_json(signature))
    members = [("manifest.json", _dump_json(manifest)), ("signature.json", _dump_json(signature))]
    members += sorted(files.items())
    if "members" in targets:
        members = draw(_mutated_members(members))
    else:
        members = [(name, tarfile.REGTYPE, data) for name, data in members]
    archive = _tar(
        members, draw(st.sampled_from((tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT)))
    )
    if "raw" in targets:
        archive = draw(_mutated_archive(archive))
    return archive


@st.composite
def _mutated_members(draw: st.DrawFn, members: list[tuple[str, bytes]]) -> list[tuple[str, bytes, bytes]]:
    out = [(name, tarfile.REGTYPE, data) for name, data in members]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(out) - 1))
        name, kind, data = out[i]
        how = draw(st.sampled_from(("name", "type", "duplicate", "drop", "add", "empty")))
        if how == "name":
            out[i] = (
                draw(st.one_of(st.sampled_from(_MEMBER_NAMES), st.text(min_size=1, max_size=30))),
                kind,
                data,
            )
        elif how == "type":
            out[i] = (name, draw(st.sampled_from(_MEMBER_TYPES)), data)
        elif how == "duplicate":
            out.insert(i, out[i])
        elif how == "drop" and len(out) > 1:
            del out[i]
        elif how == "add":
            out.append((draw(st.sampled_from(_MEMBER_NAMES)), tarfile.REGTYPE, draw(st.binary(max_size=64))))
        else:
            out[i] = (name, kind, b"")
    return out


def _tar(members: list[tuple[str, bytes, bytes]], form: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=form) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            plain = kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
            info.size = len(data) if plain else 0
            info.linkname = "adapter_config.json" if kind in (tarfile.LNKTYPE, tarfile.SYMTYPE) else ""
            try:
                tar.addfile(info, io.BytesIO(data) if plain else None)
            except (ValueError, UnicodeEncodeError):  # a name this tar format cannot hold
                continue
    return out.getvalue()


@st.composite
def _mutated_archive(draw: st.DrawFn, archive: bytes) -> bytes:
    """The tar's bytes altered: a header's size field lied (checksum fixed), cut, or padded."""
    data = bytearray(archive)
    how = draw(st.sampled_from(("size", "cut", "garbage", "flip")))
    if how == "size":
        headers = [i for i in range(0, len(data) - 512, 512) if data[i + 257 : i + 262] == b"ustar"]
        if headers:
            at = draw(st.sampled_from(headers))
            header = data[at : at + 512]
            header[124:136] = f"{draw(st.integers(0, 8**11 - 1)):011o}\0".encode()
            header[148:156] = b" " * 8
            header[148:156] = f"{sum(header):06o}\0 ".encode()
            data[at : at + 512] = header
    elif how == "cut":
        del data[draw(st.integers(0, len(data))) :]
    elif how == "garbage":
        data += draw(st.binary(min_size=1, max_size=1024))
    else:
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= draw(st.integers(1, 255))
    return bytes(data)
