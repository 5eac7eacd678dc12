"""Reading a learnware package from a stranger: tar members, manifest, hashes, signature.

The format is `lmdock.common.package`'s. Everything here assumes hostile bytes: each tar
header is checked before any byte is written, the manifest is read alone, and the rest must
match what it declares; `unpack_package` makes a package visible only once all of it verified.
Each member is hashed while it is copied out of the archive, so no file is read back to check it.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.common.adapter_config import check_module_names
from lmdock.common.errors import IntegrityError, InvalidArgument
from lmdock.common.hashing import sha256_file
from lmdock.common.package import MANIFEST, SIGNATURE, Manifest, PackageLimits, check_member_name, write_tar
from lmdock.common.signing import Signature, sign_manifest, signed_bytes, verify_manifest
from lmdock.common.task_vector_member import TASK_VECTOR_FILE, read_task_vector

__all__ = ["check_files", "sign_package", "unpack_package", "verify_folder"]

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


def _read_json(path: Path, limit: int) -> Any:
    """Strict JSON: no NaN or Infinity, and no number a signature's canonical JSON cannot hold."""
    if path.stat().st_size > limit:
        raise InvalidArgument(f"{path.name} is larger than {limit} bytes")
    try:
        return json.loads(
            path.read_text(encoding="utf-8"),
            parse_float=_finite_float,
            parse_int=_checked_int,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, InvalidArgument) as exc:
        raise InvalidArgument(f"{path.name} is not valid UTF-8 JSON: {exc}") from None
    except RecursionError:  # thousands of nested brackets: no lmdock file nests deeper than 4
        raise InvalidArgument(f"{path.name} is nested too deeply") from None


def _extract_members(archive: Path, into: Path, limits: PackageLimits) -> dict[str, str]:
    """Copy the tar's plain files into `into`, checking all that a stranger controls first;
    returns the sha256 of each declared file, taken as it was written.

    1. every header: plain regular files only (links, folders, devices and sparse members,
       which expand far beyond the bytes sent, are refused), allowed names, no duplicates, at
       most `max_files` (a header whose size runs past the archive's end is tarfile's error);
    2. manifest.json (and signature.json) alone, each at most `max_json_bytes`;
    3. the other members must be exactly the files the manifest lists, of the sizes it
       declares, before any of them is written; each copy stops at its declared size.
    """
    size = archive.stat().st_size
    if size > limits.max_package_bytes:
        raise InvalidArgument(f"package is larger than the limit of {limits.max_package_bytes} bytes")
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = _checked_members(tar, limits)
            for name in (MANIFEST, SIGNATURE):
                if name in members:
                    if members[name].size > limits.max_json_bytes:
                        raise InvalidArgument(f"{name} is larger than {limits.max_json_bytes} bytes")
                    _copy_member(tar, members[name], into)
            if MANIFEST not in members:
                raise InvalidArgument(f"package has no {MANIFEST}")
            declared = Manifest.from_dict(_read_json(into / MANIFEST, limits.max_json_bytes)).files
            _check_file_set(set(members) - {MANIFEST, SIGNATURE}, set(declared))
            for name, entry in sorted(declared.items()):
                if members[name].size != entry.size:
                    raise IntegrityError(
                        f"{name} is {members[name].size} bytes in the package, "
                        f"the manifest declares {entry.size}"
                    )
            return {name: _copy_member(tar, members[name], into) for name in sorted(declared)}
    except tarfile.TarError as exc:
        raise InvalidArgument(f"package is not a valid uncompressed tar archive: {exc}") from None


def _checked_members(tar: tarfile.TarFile, limits: PackageLimits) -> dict[str, tarfile.TarInfo]:
    """The headers of the tar by name, each one checked (see `_extract_members`, step 1)."""
    members: dict[str, tarfile.TarInfo] = {}
    for member in tar:  # headers only: the data is read when a member is copied
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


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path) -> str:
    """Write the member into `into`; returns the sha256 of the bytes written."""
    src = tar.extractfile(member)
    assert src is not None  # plain regular files always have content
    digest = hashlib.sha256()
    with src, (into / member.name).open("xb") as dst:
        while block := src.read(1024 * 1024):  # a plain member's reader ends at its size
            digest.update(block)
            dst.write(block)
        if dst.tell() != member.size:
            raise InvalidArgument(f"package member {member.name!r} is cut short")
    return digest.hexdigest()


def _check_file_set(present: set[str], listed: set[str]) -> None:
    if present != listed:
        raise InvalidArgument(
            f"package files differ from the manifest: extra {sorted(present - listed)}, "
            f"missing {sorted(listed - present)}"
        )


def check_files(
    folder: Path, *, limits: PackageLimits = PackageLimits(), digests: dict[str, str] | None = None
) -> Manifest:
    """Check an unpacked package's manifest, its exact file set and every sha256 (not the signature).

    `digests`: each file's sha256 as it was written into `folder` (else each file is read)."""
    if not (folder / MANIFEST).is_file():
        raise InvalidArgument(f"package has no {MANIFEST}")
    manifest_dict = _read_json(folder / MANIFEST, limits.max_json_bytes)
    manifest = Manifest.from_dict(manifest_dict)
    if len(manifest.task.labels) > limits.max_labels:
        raise InvalidArgument(f"more than {limits.max_labels} labels")
    # the signature covers what the manifest's fields say, re-encoded: it must be all the file says
    if signed_bytes(manifest.to_dict()) != signed_bytes(manifest_dict):
        raise InvalidArgument(
            f"manifest.json has fields or values that format {manifest.format} does not define "
            "(unknown fields, or spec values that are not float32)"
        )
    _check_file_set({p.name for p in folder.iterdir()} - {MANIFEST, SIGNATURE}, set(manifest.files))
    parsed: dict[str, Any] = {}
    for name, entry in manifest.files.items():
        path = folder / name
        actual = digests[name] if digests is not None else sha256_file(path)
        if path.stat().st_size != entry.size or actual != entry.sha256:
            raise IntegrityError(f"{name} does not match its sha256 in the manifest")
        if name.endswith(".json"):
            parsed[name] = _read_json(path, limits.max_json_bytes)
    check_module_names(parsed["adapter_config.json"])  # a required file (Manifest checks it is listed)
    if manifest.task_vector is not None:  # listed with it (Manifest checks that)
        read_task_vector(folder / TASK_VECTOR_FILE, manifest.task_vector.profile.dim)
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
    if not (folder / SIGNATURE).is_file():
        raise InvalidArgument(f"package is not signed (it has no {SIGNATURE}): sign it with `lmdock sign`")
    signature = Signature.from_dict(_read_json(folder / SIGNATURE, limits.max_json_bytes))
    verify_manifest(manifest.to_dict(), signature, trusted_key=trusted_key)
    return manifest, signature


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
