"""The task-vector spec profile: everything client and market share to compute comparable task vectors.

A task vector (the paper's parameter-vector specification) is what a small LoRA adapter on the
market's base model learns from a data set's texts: the flattened B matrices of an adapter of rank
r on the `targets` projections of the top `layers` decoder layers, trained from B = 0 with A
frozen, for `steps` full-batch steps of plain SGD on the next-token loss of each text (its first
`max_tokens` tokens), each record's gradient clipped to `clip_norm` (`client/training/task_vector`).
Plain SGD keeps the released change a sum of the steps' clipped gradients and their noise; A is
fixed by the profile (`lora_a`), so two sites' vectors live in one coordinate system.

The market compares task vectors by direction (cosine, as the paper does): its index holds each
learnware's vector scaled to unit norm (`kernel` "cosine", `lmdock.common.ranking.comparable`).

Every field shapes the vector, so every field enters the profile id (JCS, as the kernel-mean
profile's: docs/verify-any-language.md); `dim` is derived from the base model's shapes and
stated so the market can check a vector's length without loading the model.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from lmdock.common.canonical import jcs, sha256_hex
from lmdock.common.errors import InvalidArgument

__all__ = ["TASK_VECTOR_KIND", "TaskVectorProfile", "lora_a"]

TASK_VECTOR_KIND = "task-vector"
TASK_VECTOR_VERSION = 1
#: Longest vector a profile may declare (float32: 16 MiB).
MAX_DIM = 1 << 22


@dataclass(frozen=True)
class TaskVectorProfile:
    base_model: str  # the market's base-model entry, or a local Hugging Face folder
    base_sha256: str  # of the base's weights (`lmdock.common.base_model_files.base_weights_sha256`)
    dim: int  # layers * rank * (sum of the targets' output widths)
    layers: int = 4
    rank: int = 4
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    max_tokens: int = 32
    steps: int = 1  # under DP more steps add noise as fast as signal (docs/search.md), and cost time
    #: 1 / clip_norm: one step's vector is then the mean of per-record gradients scaled to norm <= 1
    #: (R = eta * steps * C = 1), a scale at which the market's unit-norm scaling is well inside float32
    learning_rate: float = 50.0
    clip_norm: float = 0.02  # below SmolLM2's per-record gradient norms (0.04-0.2): docs/search.md
    seed: int = 0
    kind: str = TASK_VECTOR_KIND
    version: int = TASK_VECTOR_VERSION

    def __post_init__(self) -> None:
        if self.kind != TASK_VECTOR_KIND or self.version != TASK_VECTOR_VERSION:
            raise InvalidArgument(f"not a version-{TASK_VECTOR_VERSION} {TASK_VECTOR_KIND} profile")
        if not self.base_model or len(self.base_sha256) != 64:
            raise InvalidArgument("a task-vector profile names its base model and the sha256 of its weights")
        if not 0 < self.dim <= MAX_DIM:
            raise InvalidArgument(f"task-vector dim {self.dim} out of range (1..{MAX_DIM})")
        for name, top in (("layers", 256), ("rank", 256), ("max_tokens", 8192), ("steps", 10_000)):
            value = getattr(self, name)
            if not (isinstance(value, int) and 1 <= value <= top):
                raise InvalidArgument(f"task-vector {name} must be an integer in [1, {top}], got {value!r}")
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise InvalidArgument("task-vector targets must name distinct modules")
        for name in ("learning_rate", "clip_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgument(f"task-vector {name} must be positive, got {value!r}")
        if not 0 <= self.seed < 2**53:
            raise InvalidArgument("seed must be in [0, 2^53)")

    @property
    def kernel(self) -> str:
        """How the market's index compares these vectors: by direction."""
        return "cosine"

    @functools.cached_property
    def profile_id(self) -> str:
        """First 16 hex digits of the sha256 of the JCS encoding of every field."""
        return sha256_hex(jcs(self.to_dict()))[:16]

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.profile_id,)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["targets"] = list(self.targets)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> TaskVectorProfile:
        if not isinstance(data, dict):
            raise InvalidArgument("a task-vector profile must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known - {"profile_id"}
        if unknown:
            raise InvalidArgument(f"unknown task-vector profile fields: {sorted(unknown)}")
        try:
            values = {k: v for k, v in data.items() if k in known}
            values["targets"] = tuple(str(t) for t in values.get("targets", cls.targets))
            profile = cls(**values)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise InvalidArgument(f"malformed task-vector profile: {exc}") from None
        if "profile_id" in data and data["profile_id"] != profile.profile_id:
            raise InvalidArgument("profile_id does not match the task-vector profile's contents")
        return profile


def lora_a(profile: TaskVectorProfile, module: str, rank: int, in_features: int) -> npt.NDArray[np.float32]:
    """The frozen A matrix (rank x in_features) of `module` under `profile`: uniform on
    [-1/sqrt(in), 1/sqrt(in)] (PEFT's Kaiming-uniform range), from SHAKE-256 of the profile's seed
    and the module's name, so any implementation in any language derives the same matrix."""
    count = rank * in_features
    stream = hashlib.shake_256(f"lmdock task-vector A\0{profile.seed}\0{module}".encode()).digest(4 * count)
    unit = np.frombuffer(stream, dtype="<u4").astype(np.float64) / 2.0**32  # [0, 1)
    bound = 1.0 / math.sqrt(in_features)
    return ((2.0 * unit - 1.0) * bound).astype(np.float32).reshape(rank, in_features)
