"""The market's persistent profile: chosen once at first start, stored in DATA_DIR/profile.json.

Changing the profile would make every published spec incomparable, so an existing file always
wins over command-line options; a mismatch is reported instead of silently applied.
"""

from __future__ import annotations

from pathlib import Path

from lmdock.common.errors import FailedPrecondition
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import make_profile

__all__ = ["load_or_create_profile"]


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
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(profile.to_json())
    tmp.replace(path)
    return profile
