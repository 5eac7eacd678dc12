"""Learnware package, format v2 (v1 is still read): one uncompressed tar holding

    manifest.json               what the learnware is (see `Manifest`; its descriptive fields are
                                the `Card`), listing every other file with its sha256 and size
    signature.json              Ed25519 signature of the manifest's canonical encoding: RFC 8785
                                (JCS) for v2, the first canonical JSON for v1 (see `signing`);
                                absent from a package written unsigned, until `sign_package`
                                (`package_reader`) adds it
    adapter_config.json         PEFT adapter config
    adapter_model.safetensors   PEFT adapter weights (and a task head, when there is one)
    README.md                   optional model card
    task_vector.safetensors     optional: the learnware's task vector (`task_vector_member`), with
                                the manifest's `task_vector` field saying how it was made

The two formats differ only in that encoding; the manifest's `format` field names its format
("lmdock-learnware/2" or "/1"). New packages are written as v2; `sign_package` keeps a package's
format (it never changes a manifest).

Only regular files with plain names are allowed: .json and .safetensors files and the model
card README.md. No links, no folders, no '..', never pickle (.bin, .pt), code or archives.
Reading one (`lmdock.common.package_reader`) verifies every hash and the signature before
anything becomes visible at the destination (temp dir + rename).

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
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.common.card import Card, check_text_field
from lmdock.common.errors import InvalidArgument
from lmdock.common.hashing import sha256_file
from lmdock.common.signing import MANIFEST_ENCODINGS, Signature, sign_manifest
from lmdock.common.spec import Spec
from lmdock.common.task_vector_member import TASK_VECTOR_FILE, TaskVectorInfo

__all__ = [
    "FORMAT",
    "FORMATS",
    "POOLINGS",
    "REQUIRED_FILES",
    "FileEntry",
    "Manifest",
    "PackageLimits",
    "TaskInfo",
    "check_member_name",
    "write_package",
    "write_tar",
]

#: The format new packages are written in; FORMATS: every format read, oldest first.
FORMAT = "lmdock-learnware/2"
FORMATS = tuple(MANIFEST_ENCODINGS)
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
    task_vector: TaskVectorInfo | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidArgument(
                f"package format {self.format[:64]!r} is not supported (need one of {', '.join(FORMATS)})"
            )
        for name in (*REQUIRED_FILES,):
            if name not in self.files:
                raise InvalidArgument(f"manifest lists no {name}")
        for name in self.files:
            check_member_name(name)
        check_text_field("base_model", self.base_model)
        _check_training(self.training)
        if (self.task_vector is None) != (TASK_VECTOR_FILE not in self.files):
            raise InvalidArgument(
                f"a manifest lists {TASK_VECTOR_FILE} if and only if it has a task_vector field"
            )

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
            # only when present: manifests without a task vector stay byte-identical
            **({} if self.task_vector is None else {"task_vector": self.task_vector.to_dict()}),
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
                task_vector=TaskVectorInfo.from_dict(data["task_vector"]) if "task_vector" in data else None,
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


def check_member_name(name: str) -> None:
    """Refuse a file name a package may not hold (see the module docstring)."""
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
    task_vector: TaskVectorInfo | None = None,
) -> Manifest:
    """Hash `files`, build the manifest and write the package tar to `out` atomically.

    With `key` the manifest is signed at once; with None the package is written unsigned (the
    market refuses it until `sign_package` adds signature.json). Files are added in name order
    with fixed metadata, so equal inputs give equal bytes.
    """
    for name in files:
        check_member_name(name)
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
        task_vector=task_vector,
    )
    manifest_dict = manifest.to_dict()
    signature = None if key is None else sign_manifest(manifest_dict, key)
    write_tar(out, manifest_dict, signature, files)
    return manifest


def write_tar(
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
