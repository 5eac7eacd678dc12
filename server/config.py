"""The market's persistent profiles: the first chosen once at first start (DATA_DIR/profile.json),
any later ones added beside it (DATA_DIR/added-profiles.json, oldest first), and the task-vector
profiles it serves (DATA_DIR/task-vector-profiles.json, oldest first; issue 22).

Changing a profile would make every spec published under it incomparable, so an existing file
always wins over command-line options; a mismatch is reported instead of silently applied. A
new spec kind is *added* (`add_profile`, `lmdock-market add-profile`): the market then serves
both side by side, each with its own index, and learnwares under the old one stay searchable
(docs/search.md, *Profiles side by side*). A running market reads them at start.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmdock.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import make_profile
from lmdock.common.task_vector import TaskVectorProfile

__all__ = [
    "add_profile",
    "add_task_vector_profile",
    "load_added_profiles",
    "load_or_create_profile",
    "load_task_vector_profiles",
]

ADDED = "added-profiles.json"
TASK_VECTORS = "task-vector-profiles.json"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load_or_create_profile(data_dir: Path, *, requested: SpecProfile | None = None) -> SpecProfile:
    path = data_dir / "profile.json"
    if path.exists():
        profile = SpecProfile.from_json(path.read_text())
        if requested is not None and requested.profile_id != profile.profile_id:
            raise FailedPrecondition(
                f"{path} holds profile {profile.profile_id}, not the requested {requested.profile_id}; "
                "a market keeps its profile for life (use a new data dir for a new profile)"
            )
        return profile
    profile = requested or make_profile()
    _write(path, profile.to_json())
    return profile


def _listed(path: Path, what: str) -> list[dict[str, object]]:
    """The JSON list of profile objects in `path` (none when the file is absent)."""
    if not path.exists():
        return []
    try:
        listed = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(listed, list) or not all(isinstance(p, dict) for p in listed):
        raise InvalidArgument(f"{path} must hold a JSON list of {what}")
    return listed


def load_added_profiles(data_dir: Path) -> tuple[SpecProfile, ...]:
    """The profiles added beside the first, oldest first (none when the file is absent)."""
    return tuple(SpecProfile.from_dict(p) for p in _listed(data_dir / ADDED, "spec profiles"))


def load_task_vector_profiles(data_dir: Path) -> tuple[TaskVectorProfile, ...]:
    """The task-vector profiles served, oldest first (none when the file is absent)."""
    return tuple(
        TaskVectorProfile.from_dict(p) for p in _listed(data_dir / TASK_VECTORS, "task-vector profiles")
    )


def add_task_vector_profile(data_dir: Path, profile: TaskVectorProfile) -> tuple[TaskVectorProfile, ...]:
    """Serve task-vector `profile` from the market's next start; returns every one served."""
    served = load_task_vector_profiles(data_dir)
    if profile.profile_id in {p.profile_id for p in served}:
        raise AlreadyExists(f"the market already serves task-vector profile {profile.profile_id}")
    served = (*served, profile)
    listed = [{**p.to_dict(), "profile_id": p.profile_id} for p in served]
    _write(data_dir / TASK_VECTORS, json.dumps(listed, indent=2))
    return served


def add_profile(data_dir: Path, profile: SpecProfile) -> tuple[SpecProfile, ...]:
    """Serve `profile` beside the market's others from its next start; returns the added ones."""
    first = load_or_create_profile(data_dir)
    added = load_added_profiles(data_dir)
    if profile.profile_id in {first.profile_id, *(p.profile_id for p in added)}:
        raise AlreadyExists(f"the market already serves profile {profile.profile_id}")
    added = (*added, profile)
    listed = [{**p.to_dict(), "profile_id": p.profile_id} for p in added]
    _write(data_dir / ADDED, json.dumps(listed, indent=2))
    return added
