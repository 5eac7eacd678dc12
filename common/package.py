"""Learnware package, format v1: one uncompressed tar holding

    manifest.json               what the learnware is (see `Manifest`; its descriptive fields are
                                the `Card`), listing every other file with its sha256 and size
    signature.json              Ed25519 signature of canonical_json(manifest) (see `signing`);
                                absent from a package written unsigned, until `sign_package`
    adapter_config.json         PEFT adapter config
    adapter_model.safetensors   PEFT adapter weights (and a task head, when there is one)
    README.md                   optional model card

Only regular files with plain names are allowed: .json and .safetensors files and the model
card README.md. No links, no folders, no '..', never pickle (.bin, .pt), code or archives.
Unpacking verifies every hash and the signature before anything becomes visible at the
destination (temp dir + rename).

The manifest's `training` object says whether the adapter was trained with differential
privacy: `dp` is a boolean (absent means false), and a DP-trained adapter also states the
`epsilon` and `delta` its training spent. An adapter trained without DP on private records can
reveal who was in them, so the market and the client show this to everyone.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.common.adapter_config import check_module_names
from lmdock.common.canonical import canonical_json
from lmdock.common.card import Card, check_text_field
from lmdock.common.errors import IntegrityError, InvalidArgument
from lmdock.common.hashing import sha256_file
from lmdock.common.signing import Signature, sign_manifest, verify_manifest
from lmdock.common.spec import Spec

__all__ = [
    "FORMAT",
    "POOLINGS",
    "REQUIRED_FILES",
    "FileEntry",
    "Manifest",
    "PackageLimits",
    "TaskInfo",
    "check_files",
    "sign_package",
    "unpack_package",
    "verify_folder",
    "write_package",
]

FORMAT = "lmdock-learnware/1"
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
ALLOWED_SUFFIXES = (".json", ".safetensors")
MODEL_CARD = "README.md"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TASK_KINDS = ("classification", "generation")
#: How a classifier reads the encoder: "cls" = the architecture's own sequence-classification
#: head (BERT: pooler over [CLS], then `classifier`); "mean" = `classifier` over the
#: attention-masked mean of the last hidden states (DP builds: a linear probe).
POOLINGS = ("cls", "mean")
#: Tar member types whose bytes are all in the archive (no links, devices or sparse maps).
_PLAIN_MEMBERS = (tarfile.REGTYPE, tarfile.AREGTYPE)


@dataclass(frozen=True)
class PackageLimits:
    max_package_bytes: int = 2 * 1024**3
    max_files: int = 16
    max_json_bytes: int = 4 * 1024**2
    max_labels: int = 1024


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class TaskInfo:
    kind: str
    labels: tuple[str, ...] = ()
    pooling: str = "cls"  # classification only (see POOLINGS)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise InvalidArgument(f"task kind must be one of {TASK_KINDS}, got {self.kind!r}")
        if self.pooling not in POOLINGS or (self.pooling != "cls" and self.kind != "classification"):
            raise InvalidArgument(f"task pooling must be one of {POOLINGS} (classification only)")
        if self.kind == "classification" and len(self.labels) < 2:
            raise InvalidArgument("a classification task needs at least 2 labels")
        if len(set(self.labels)) != len(self.labels):
            raise InvalidArgument("task labels must be distinct")

    def to_dict(self) -> dict[str, Any]:
        """`pooling` only when not the default, so manifests written before it stay byte-identical."""
        out: dict[str, Any] = {"kind": self.kind, "labels": list(self.labels)}
        if self.pooling != "cls":
            out["pooling"] = self.pooling
        return out

    @classmethod
    def from_dict(cls, data: Any) -> TaskInfo:
        return cls(
            kind=str(data["kind"]),
            labels=tuple(str(x) for x in data.get("labels", [])),
            pooling=str(data.get("pooling", "cls")),
        )


@dataclass(frozen=True)
class Manifest:
    card: Card
    base_model: str
    task: TaskInfo
    spec: Spec
    files: Mapping[str, FileEntry]
    training: Mapping[str, Any] = field(default_factory=dict)
    eval_scores: Mapping[str, float] = field(default_factory=dict)
    created_at: str = ""
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise InvalidArgument(f"package format {self.format!r} is not supported (need {FORMAT})")
        for name in (*REQUIRED_FILES,):
            if name not in self.files:
                raise InvalidArgument(f"manifest lists no {name}")
        for name in self.files:
            _check_name(name)
        check_text_field("base_model", self.base_model)
        _check_training(self.training)

    @property
    def dp_trained(self) -> bool:
        return bool(self.training.get("dp", False))

    @property
    def dp_budget(self) -> tuple[float, float] | None:
        """(epsilon, delta) spent by DP training, or None for an adapter trained without DP."""
        if not self.dp_trained:
            return None
        return float(self.training["epsilon"]), float(self.training["delta"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            **self.card.to_dict(),
            "base_model": self.base_model,
            "task": self.task.to_dict(),
            "spec": self.spec.to_dict(),
            "training": dict(self.training),
            "eval_scores": dict(self.eval_scores),
            "files": {k: {"sha256": v.sha256, "size": v.size} for k, v in sorted(self.files.items())},
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise InvalidArgument("manifest.json must hold a JSON object")
        try:
            task = data["task"]
            files = {
                str(name): FileEntry(sha256=str(e["sha256"]), size=int(e["size"]))
                for name, e in dict(data["files"]).items()
            }
            return cls(
                format=str(data.get("format", "")),
                card=Card.from_dict(data),
                base_model=str(data["base_model"]),
                task=TaskInfo.from_dict(task),
                spec=Spec.from_dict(data["spec"]),
                training=dict(data.get("training", {})),
                eval_scores={str(k): float(v) for k, v in dict(data.get("eval_scores", {})).items()},
                files=files,
                created_at=str(data.get("created_at", "")),
            )
        except InvalidArgument:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            # a stranger's JSON: a missing key, a string where a number belongs, a size of 1e400
            raise InvalidArgument(f"manifest.json is malformed: missing or bad {exc}") from None


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_training(training: Mapping[str, Any]) -> None:
    """training.dp is a boolean; when true, training.epsilon > 0 and 0 <= training.delta < 1."""
    dp = training.get("dp", False)
    if not isinstance(dp, bool):
        raise InvalidArgument("manifest training.dp must be true or false")
    if not dp:
        return
    epsilon, delta = training.get("epsilon"), training.get("delta")
    if not _is_number(epsilon) or epsilon <= 0:
        raise InvalidArgument("a DP-trained adapter must state training.epsilon > 0 in its manifest")
    if not _is_number(delta) or not 0 <= delta < 1:
        raise InvalidArgument("a DP-trained adapter must state training.delta in [0, 1) in its manifest")


def _check_name(name: str) -> None:
    if not _NAME.match(name) or ".." in name:
        raise InvalidArgument(f"file name {name!r} is not allowed (plain names only, no folders)")
    if not name.endswith(ALLOWED_SUFFIXES) and name != MODEL_CARD:
        raise InvalidArgument(
            f"file {name!r} is not allowed: only {', '.join(ALLOWED_SUFFIXES)} files and the model card "
            f"{MODEL_CARD} (never pickle, code or archives)"
        )


def _tar_add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_package(
    out: Path,
    *,
    files: Mapping[str, Path],
    key: Ed25519PrivateKey | None,
    card: Card,
    base_model: str,
    task: TaskInfo,
    spec: Spec,
    training: Mapping[str, Any] | None = None,
    eval_scores: Mapping[str, float] | None = None,
    created_at: str = "",
) -> Manifest:
    """Hash `files`, build the manifest and write the package tar to `out` atomically.

    With `key` the manifest is signed at once; with None the package is written unsigned (the
    market refuses it until `sign_package` adds signature.json). Files are added in name order
    with fixed metadata, so equal inputs give equal bytes.
    """
    for name in files:
        _check_name(name)
    entries = {name: FileEntry(sha256=sha256_file(p), size=p.stat().st_size) for name, p in files.items()}
    manifest = Manifest(
        card=card,
        base_model=base_model,
        task=task,
        spec=spec,
        files=entries,
        training=dict(training or {}),
        eval_scores=dict(eval_scores or {}),
        created_at=created_at,
    )
    manifest_dict = manifest.to_dict()
    signature = None if key is None else sign_manifest(manifest_dict, key)
    _write_tar(out, manifest_dict, signature, files)
    return manifest


def sign_package(
    package: Path, key: Ed25519PrivateKey, *, limits: PackageLimits = PackageLimits()
) -> tuple[Manifest, Signature]:
    """Sign `package` in place (replacing any signature) after checking every file's sha256.

    The manifest is not changed, so the package's files and their hashes stay as written.
    """
    staging = Path(tempfile.mkdtemp(dir=package.parent, prefix=".sign-"))
    try:
        _extract_members(package, staging, limits)
        manifest = check_files(staging, limits=limits)
        manifest_dict = manifest.to_dict()
        signature = sign_manifest(manifest_dict, key)
        _write_tar(package, manifest_dict, signature, {name: staging / name for name in manifest.files})
        return manifest, signature
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_tar(
    out: Path, manifest_dict: dict[str, Any], signature: Signature | None, files: Mapping[str, Path]
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".pkg-", suffix=".tmp")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            _tar_add_bytes(tar, MANIFEST, json.dumps(manifest_dict, indent=2).encode())
            if signature is not None:
                _tar_add_bytes(tar, SIGNATURE, json.dumps(signature.to_dict(), indent=2).encode())
            for name in sorted(files):
                info = tarfile.TarInfo(name)
                info.size = files[name].stat().st_size
                info.mode = 0o644
                info.mtime = 0
                with files[name].open("rb") as fh:
                    tar.addfile(info, fh)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path, limit: int) -> Any:
    if path.stat().st_size > limit:
        raise InvalidArgument(f"{path.name} is larger than {limit} bytes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"{path.name} is not valid UTF-8 JSON: {exc}") from None
    except RecursionError:  # thousands of nested brackets: no lmdock file nests deeper than 4
        raise InvalidArgument(f"{path.name} is nested too deeply") from None


def _extract_members(archive: Path, into: Path, limits: PackageLimits) -> None:
    """Copy the tar's plain files into `into`, checking all that a stranger controls first.

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
            for name in sorted(declared):
                _copy_member(tar, members[name], into)
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
            _check_name(member.name)
        if member.name in members:
            raise InvalidArgument(f"package holds {member.name!r} twice")
        members[member.name] = member
        if len(members) > limits.max_files:
            raise InvalidArgument(f"package holds more than {limits.max_files} files")
    return members


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path) -> None:
    src = tar.extractfile(member)
    assert src is not None  # plain regular files always have content
    with src, (into / member.name).open("xb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)  # a plain member's reader ends at its size
        if dst.tell() != member.size:
            raise InvalidArgument(f"package member {member.name!r} is cut short")


def _check_file_set(present: set[str], listed: set[str]) -> None:
    if present != listed:
        raise InvalidArgument(
            f"package files differ from the manifest: extra {sorted(present - listed)}, "
            f"missing {sorted(listed - present)}"
        )


def check_files(folder: Path, *, limits: PackageLimits = PackageLimits()) -> Manifest:
    """Check an unpacked package's manifest, its exact file set and every sha256 (not the signature)."""
    if not (folder / MANIFEST).is_file():
        raise InvalidArgument(f"package has no {MANIFEST}")
    manifest_dict = _read_json(folder / MANIFEST, limits.max_json_bytes)
    manifest = Manifest.from_dict(manifest_dict)
    if len(manifest.task.labels) > limits.max_labels:
        raise InvalidArgument(f"more than {limits.max_labels} labels")
    if canonical_json(manifest.to_dict()) != canonical_json(manifest_dict):
        raise InvalidArgument("manifest.json has fields that format v1 does not define")
    _check_file_set({p.name for p in folder.iterdir()} - {MANIFEST, SIGNATURE}, set(manifest.files))
    for name, entry in manifest.files.items():
        path = folder / name
        if path.stat().st_size != entry.size or sha256_file(path) != entry.sha256:
            raise IntegrityError(f"{name} does not match its sha256 in the manifest")
        if name.endswith(".json"):
            _read_json(path, limits.max_json_bytes)
    check_module_names(_read_json(folder / "adapter_config.json", limits.max_json_bytes))
    return manifest


def verify_folder(
    folder: Path, *, limits: PackageLimits = PackageLimits(), trusted_key: str | None = None
) -> tuple[Manifest, Signature]:
    """Check an unpacked package: manifest, exact file set, every sha256, the signature."""
    manifest = check_files(folder, limits=limits)
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
        _extract_members(archive, staging, limits)
        manifest, signature = verify_folder(staging, limits=limits, trusted_key=trusted_key)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
        return manifest, signature
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
