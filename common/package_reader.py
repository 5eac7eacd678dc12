"""Reading a learnware package from a stranger: tar members, manifest, hashes, signature.

The format is `lmdock.common.package`'s. Everything here assumes hostile bytes: each tar
header is checked before any byte is read or written, the manifest is read alone, and the rest
must match what it declares. Two ways through the same checks:

* `unpack_package` (the client's cache) copies the files out, hashing each while it is
  written, and makes the package visible only once all of it verified;
* `read_package` (the market's upload) writes nothing: each member is hashed where it lies in
  the archive, and the checker reads the members there (`ArchivedPackage.members`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.common.adapter_config import check_module_names
from lmdock.common.errors import IntegrityError, InvalidArgument
from lmdock.common.hashing import sha256_file
from lmdock.common.package import MANIFEST, SIGNATURE, Manifest, PackageLimits, check_member_name, write_tar
from lmdock.common.signing import Signature, sign_manifest, signed_bytes, verify_manifest
from lmdock.common.task_vector_member import TASK_VECTOR_FILE, read_task_vector, task_vector_file_limit

__all__ = [
    "ArchivedPackage",
    "Member",
    "check_files",
    "read_package",
    "sign_package",
    "unpack_package",
    "verify_folder",
]

#: Tar member types whose bytes are all in the archive (no links, devices or sparse maps).
_PLAIN_MEMBERS = (tarfile.REGTYPE, tarfile.AREGTYPE)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf, which no canonical JSON can write back
        raise InvalidArgument(f"number {text[:40]} is out of range")
    return value


def _checked_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (4300)
        raise InvalidArgument(f"an integer of {len(text)} digits is out of range") from None


def _refuse_constant(name: str) -> Any:
    raise InvalidArgument(f"{name} is not a JSON value")


def _parse_json(name: str, data: bytes) -> Any:
    """Strict JSON: no NaN or Infinity, and no number a signature's canonical JSON cannot hold."""
    try:
        return json.loads(
            data.decode("utf-8"),
            parse_float=_finite_float,
            parse_int=_checked_int,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, InvalidArgument) as exc:
        raise InvalidArgument(f"{name} is not valid UTF-8 JSON: {exc}") from None
    except RecursionError:  # thousands of nested brackets: no lmdock file nests deeper than 4
        raise InvalidArgument(f"{name} is nested too deeply") from None


def _check_json_size(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise InvalidArgument(f"{name} is larger than {limit} bytes")


def _read_json(path: Path, limit: int) -> Any:
    _check_json_size(path.name, path.stat().st_size, limit)
    return _parse_json(path.name, path.read_bytes())


@contextlib.contextmanager
def _open_tar(archive: Path, limits: PackageLimits) -> Iterator[tarfile.TarFile]:
    size = archive.stat().st_size
    if size > limits.max_package_bytes:
        raise InvalidArgument(f"package is larger than the limit of {limits.max_package_bytes} bytes")
    try:
        with tarfile.open(archive, mode="r:") as tar:
            yield tar
    except tarfile.TarError as exc:
        raise InvalidArgument(f"package is not a valid uncompressed tar archive: {exc}") from None


def _declared_members(
    tar: tarfile.TarFile, limits: PackageLimits
) -> tuple[dict[str, tarfile.TarInfo], dict[str, bytes]]:
    """The tar's members checked against all that a stranger controls, before any other byte is
    read: the files the manifest declares by name, and the bytes of manifest.json (and of
    signature.json, when there is one).

    1. every header: plain regular files only (links, folders, devices and sparse members,
       which expand far beyond the bytes sent, are refused), allowed names, no duplicates, at
       most `max_files` (a header whose size runs past the archive's end is tarfile's error);
    2. manifest.json (and signature.json) alone, each at most `max_json_bytes`;
    3. the other members must be exactly the files the manifest lists, of the sizes it declares.
    """
    members = _checked_members(tar, limits)
    small = {}
    for name in (MANIFEST, SIGNATURE):
        if name in members:
            _check_json_size(name, members[name].size, limits.max_json_bytes)
            small[name] = _member_bytes(tar, members.pop(name))
    if MANIFEST not in small:
        raise InvalidArgument(f"package has no {MANIFEST}")
    declared = Manifest.from_dict(_parse_json(MANIFEST, small[MANIFEST])).files
    _check_file_set(set(members), set(declared))
    for name, entry in sorted(declared.items()):
        if members[name].size != entry.size:
            raise IntegrityError(
                f"{name} is {members[name].size} bytes in the package, the manifest declares {entry.size}"
            )
    return members, small


def _extract_members(archive: Path, into: Path, limits: PackageLimits) -> dict[str, str]:
    """Copy the tar's declared files into `into` (`_declared_members` checked first), each copy
    stopping at its declared size; returns the sha256 of each file, taken as it was written."""
    with _open_tar(archive, limits) as tar:
        members, small = _declared_members(tar, limits)
        for name, data in small.items():
            with (into / name).open("xb") as out:
                out.write(data)
        return {name: _member_digest(tar, member, into / name) for name, member in sorted(members.items())}


def _checked_members(tar: tarfile.TarFile, limits: PackageLimits) -> dict[str, tarfile.TarInfo]:
    """The headers of the tar by name, each one checked (see `_declared_members`, step 1)."""
    members: dict[str, tarfile.TarInfo] = {}
    for member in tar:  # headers only: a member's data is read after every header passed
        if member.type not in _PLAIN_MEMBERS or member.issparse():
            raise InvalidArgument(
                f"package member {member.name!r} is not a regular file "
                "(links, folders, devices and sparse files are refused)"
            )
        if member.name not in (MANIFEST, SIGNATURE):
            check_member_name(member.name)
        if member.name in members:
            raise InvalidArgument(f"package holds {member.name!r} twice")
        members[member.name] = member
        if len(members) > limits.max_files:
            raise InvalidArgument(f"package holds more than {limits.max_files} files")
    return members


def _member_digest(tar: tarfile.TarFile, member: tarfile.TarInfo, copy_to: Path | None = None) -> str:
    """The sha256 of the member's bytes, read where they lie (and written to `copy_to`)."""
    src = tar.extractfile(member)
    assert src is not None  # plain regular files always have content
    digest, read = hashlib.sha256(), 0
    with src, copy_to.open("xb") if copy_to is not None else contextlib.nullcontext() as dst:
        while block := src.read(1024 * 1024):  # a plain member's reader ends at its size
            digest.update(block)
            read += len(block)
            if dst is not None:
                dst.write(block)
    if read != member.size:
        raise InvalidArgument(f"package member {member.name!r} is cut short")
    return digest.hexdigest()


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    src = tar.extractfile(member)
    assert src is not None
    with src:
        data = src.read(member.size)
    if len(data) != member.size:
        raise InvalidArgument(f"package member {member.name!r} is cut short")
    return data


def _check_file_set(present: set[str], listed: set[str]) -> None:
    if present != listed:
        raise InvalidArgument(
            f"package files differ from the manifest: extra {sorted(present - listed)}, "
            f"missing {sorted(listed - present)}"
        )


def _check_contents(
    manifest_dict: Any,
    present: set[str],
    file_digest: Callable[[str], tuple[int, str]],
    read_json: Callable[[str], Any],
    read_member: Callable[[str], bytes],
    limits: PackageLimits,
) -> tuple[Manifest, dict[str, Any]]:
    """The manifest, its exact file set, every size and sha256 (`file_digest`: a present file's
    size and sha256), every JSON file parsed strictly, a task vector's one tensor; returns the
    manifest and the JSON files."""
    manifest = Manifest.from_dict(manifest_dict)
    if len(manifest.task.labels) > limits.max_labels:
        raise InvalidArgument(f"more than {limits.max_labels} labels")
    # the signature covers what the manifest's fields say, re-encoded: it must be all the file says
    if signed_bytes(manifest.to_dict()) != signed_bytes(manifest_dict):
        raise InvalidArgument(
            f"manifest.json has fields or values that format {manifest.format} does not define "
            "(unknown fields, or spec values that are not float32)"
        )
    _check_file_set(present, set(manifest.files))
    parsed: dict[str, Any] = {}
    for name, entry in manifest.files.items():
        if file_digest(name) != (entry.size, entry.sha256):
            raise IntegrityError(f"{name} does not match its sha256 in the manifest")
        if name.endswith(".json"):
            parsed[name] = read_json(name)
    check_module_names(parsed["adapter_config.json"])  # a required file (Manifest checks it is listed)
    if manifest.task_vector is not None:  # listed with it (Manifest checks that)
        dim = manifest.task_vector.profile.dim
        size = manifest.files[TASK_VECTOR_FILE].size
        if size > task_vector_file_limit(dim):
            raise InvalidArgument(f"{TASK_VECTOR_FILE} is {size} bytes, more than a [{dim}] vector needs")
        read_task_vector(read_member(TASK_VECTOR_FILE), dim)
    return manifest, parsed


def _verified_signature(manifest: Manifest, raw: Any | None, trusted_key: str | None) -> Signature:
    """`raw`: signature.json parsed, None when the package has none."""
    if raw is None:
        raise InvalidArgument(f"package is not signed (it has no {SIGNATURE}): sign it with `lmdock sign`")
    signature = Signature.from_dict(raw)
    verify_manifest(manifest.to_dict(), signature, trusted_key=trusted_key)
    return signature


def check_files(
    folder: Path, *, limits: PackageLimits = PackageLimits(), digests: dict[str, str] | None = None
) -> Manifest:
    """Check an unpacked package's manifest, its exact file set and every sha256 (not the signature).

    `digests`: each file's sha256 as it was written into `folder` (else each file is read)."""
    if not (folder / MANIFEST).is_file():
        raise InvalidArgument(f"package has no {MANIFEST}")

    def file_digest(name: str) -> tuple[int, str]:
        path = folder / name
        return path.stat().st_size, digests[name] if digests is not None else sha256_file(path)

    manifest, _ = _check_contents(
        _read_json(folder / MANIFEST, limits.max_json_bytes),
        {p.name for p in folder.iterdir()} - {MANIFEST, SIGNATURE},
        file_digest,
        lambda name: _read_json(folder / name, limits.max_json_bytes),
        lambda name: (folder / name).read_bytes(),
        limits,
    )
    return manifest


def verify_folder(
    folder: Path,
    *,
    limits: PackageLimits = PackageLimits(),
    trusted_key: str | None = None,
    digests: dict[str, str] | None = None,
) -> tuple[Manifest, Signature]:
    """Check an unpacked package: manifest, exact file set, every sha256, the signature."""
    manifest = check_files(folder, limits=limits, digests=digests)
    signed = folder / SIGNATURE
    raw = _read_json(signed, limits.max_json_bytes) if signed.is_file() else None
    return manifest, _verified_signature(manifest, raw, trusted_key)


@dataclass(frozen=True)
class Member:
    """Where a package file's bytes lie in its archive."""

    offset: int
    size: int


@dataclass(frozen=True)
class ArchivedPackage:
    """A package verified where it lies (`read_package`): nothing of it was written anywhere."""

    archive: Path
    manifest: Manifest
    signature: Signature
    members: dict[str, Member]  # every file the manifest lists
    json_files: dict[str, Any]  # each of them that is JSON, parsed strictly


def read_package(
    archive: Path, *, limits: PackageLimits = PackageLimits(), trusted_key: str | None = None
) -> ArchivedPackage:
    """Verify `archive` as completely as `unpack_package` does, without writing a byte: every
    member is hashed where it lies, and the result says where each one is.

    Raises InvalidArgument for a malformed package and IntegrityError when hashes or the
    signature do not match."""
    with _open_tar(archive, limits) as tar:
        members, small = _declared_members(tar, limits)
        digests = {name: _member_digest(tar, member) for name, member in sorted(members.items())}

        def read_json(name: str) -> Any:
            _check_json_size(name, members[name].size, limits.max_json_bytes)
            return _parse_json(name, _member_bytes(tar, members[name]))

        manifest, parsed = _check_contents(
            _parse_json(MANIFEST, small[MANIFEST]),
            set(members),
            lambda name: (members[name].size, digests[name]),
            read_json,
            lambda name: _member_bytes(tar, members[name]),
            limits,
        )
    raw_signature = _parse_json(SIGNATURE, small[SIGNATURE]) if SIGNATURE in small else None
    return ArchivedPackage(
        archive=archive,
        manifest=manifest,
        signature=_verified_signature(manifest, raw_signature, trusted_key),
        members={name: Member(offset=m.offset_data, size=m.size) for name, m in members.items()},
        json_files=parsed,
    )


def unpack_package(
    archive: Path,
    dest: Path,
    *,
    limits: PackageLimits = PackageLimits(),
    trusted_key: str | None = None,
) -> tuple[Manifest, Signature]:
    """Verify `archive` completely, then make its files appear at `dest` (replacing it).

    Raises InvalidArgument for a malformed package and IntegrityError when hashes or the
    signature do not match; in both cases `dest` is left as it was.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unpack-"))
    try:
        digests = _extract_members(archive, staging, limits)
        manifest, signature = verify_folder(staging, limits=limits, trusted_key=trusted_key, digests=digests)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
        return manifest, signature
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sign_package(
    package: Path, key: Ed25519PrivateKey, *, limits: PackageLimits = PackageLimits()
) -> tuple[Manifest, Signature, str]:
    """Sign `package` in place (replacing any signature) after checking every file's sha256;
    returns the manifest, the new signature and the key id of the one it replaced ("" if none).

    The manifest is not changed, so the package's files and their hashes stay as written.
    """
    staging = Path(tempfile.mkdtemp(dir=package.parent, prefix=".sign-"))
    try:
        digests = _extract_members(package, staging, limits)
        manifest = check_files(staging, limits=limits, digests=digests)
        previous = ""
        if (staging / SIGNATURE).is_file():
            previous = Signature.from_dict(_read_json(staging / SIGNATURE, limits.max_json_bytes)).key_id
        manifest_dict = manifest.to_dict()
        signature = sign_manifest(manifest_dict, key)
        write_tar(package, manifest_dict, signature, {name: staging / name for name in manifest.files})
        return manifest, signature, previous
    finally:
        shutil.rmtree(staging, ignore_errors=True)
