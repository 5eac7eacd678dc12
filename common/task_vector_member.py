"""A learnware package's optional task vector: `task_vector.safetensors` and what the manifest says of it.

The file holds exactly one float32 tensor, `task_vector`, of shape [dim] (the profile's dim):
the learnware's task vector (`lmdock.common.task_vector`), listed in the manifest's `files` by
sha256 like every member. The manifest's `task_vector` field says how it was made:

    {"profile": <the TaskVectorProfile's fields and its profile_id>, "privacy": <Privacy>}

A publisher's vector is exact (privacy epsilon null, sigma 0). Packages without a task vector
carry neither the file nor the field, so their manifests (and signatures) are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from lmdock.common.errors import InvalidArgument
from lmdock.common.spec import Privacy, Spec
from lmdock.common.task_vector import TaskVectorProfile
from safetensors import SafetensorError
from safetensors.numpy import load, save_file

__all__ = [
    "TASK_VECTOR_FILE",
    "TASK_VECTOR_TENSOR",
    "TaskVectorInfo",
    "read_task_vector",
    "task_vector_file_limit",
    "write_task_vector",
]

TASK_VECTOR_FILE = "task_vector.safetensors"
TASK_VECTOR_TENSOR = "task_vector"


@dataclass(frozen=True)
class TaskVectorInfo:
    """The manifest's `task_vector` field: the profile the vector was computed under, and its noise."""

    profile: TaskVectorProfile
    privacy: Privacy

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": {**self.profile.to_dict(), "profile_id": self.profile.profile_id},
            "privacy": self.privacy.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> TaskVectorInfo:
        if not isinstance(data, dict) or set(data) != {"profile", "privacy"}:
            raise InvalidArgument("manifest task_vector must be an object of exactly profile and privacy")
        profile = TaskVectorProfile.from_dict(data["profile"])
        return cls(profile=profile, privacy=Privacy.from_dict(data["privacy"]))

    def spec(self, values: npt.NDArray[np.float32]) -> Spec:
        """The vector as a spec under its profile: what the market's task-vector index holds."""
        return Spec(self.profile.profile_id, values, self.privacy, version=self.profile.version)


def write_task_vector(path: Path, values: npt.ArrayLike) -> None:
    vector = np.ascontiguousarray(values, dtype=np.float32)
    if vector.ndim != 1:
        raise InvalidArgument(f"a task vector is one-dimensional, got shape {list(vector.shape)}")
    save_file({TASK_VECTOR_TENSOR: vector}, str(path))


def task_vector_file_limit(dim: int) -> int:
    """The most bytes a task-vector file of `dim` values may take: the values and 64 KiB of header."""
    return 4 * dim + 8 + (64 << 10)


def read_task_vector(data: bytes, dim: int) -> npt.NDArray[np.float32]:
    """The vector in `data` (the file's bytes), refused (InvalidArgument, naming the rule) unless
    it is a valid safetensors file of exactly one float32 tensor `task_vector` of shape [dim] whose
    values are all finite."""
    name = TASK_VECTOR_FILE
    if len(data) > task_vector_file_limit(dim):
        raise InvalidArgument(f"{name} is {len(data)} bytes, more than a [{dim}] vector needs")
    try:
        tensors = load(data)  # checks the header against the bytes
    except SafetensorError as exc:
        raise InvalidArgument(f"{name} is not a valid safetensors file: {exc}") from None
    names = list(tensors)
    if names != [TASK_VECTOR_TENSOR]:
        raise InvalidArgument(
            f"{name} must hold exactly one tensor {TASK_VECTOR_TENSOR!r}, found {names[:4]}"
        )
    values = tensors[TASK_VECTOR_TENSOR]
    if values.dtype != np.float32:
        raise InvalidArgument(f"{name}: tensor {TASK_VECTOR_TENSOR!r} has dtype {values.dtype}, not float32")
    if list(values.shape) != [dim]:
        raise InvalidArgument(
            f"{name}: tensor {TASK_VECTOR_TENSOR!r} has shape {list(values.shape)}, "
            f"its profile's dim needs [{dim}]"
        )
    if not np.all(np.isfinite(values)):
        raise InvalidArgument(f"{name}: the task vector holds NaN or Inf")
    return values
