"""What an adapter's adapter_config.json may choose: modules by name, never by pattern.

Checked for every package, on both sides (`lmdock.common.package_reader.check_files`): by the market
before it accepts an upload and by the client before it caches or loads one.
"""

from __future__ import annotations

import re
from typing import Any

from lmdock.common.errors import InvalidArgument

__all__ = ["MAX_MODULE_NAMES", "check_module_names"]

MAX_MODULE_NAMES, MAX_MODULE_NAME_CHARS = 64, 128
_MODULE_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_MODULE_NAME_CHARS - 1}}}")


def check_module_names(config: Any) -> None:
    """Module choices must be plain lists of names, never patterns.

    PEFT runs a string `target_modules`, `layers_pattern` and the keys of `rank_pattern` /
    `alpha_pattern` as regular expressions (re, with backtracking) against every module name:
    a publisher's pattern such as "(.|.)*Z" would pin a core of the market (or of a client
    loading the adapter) for as long as it likes. Lists of names are matched by equality or
    suffix, in linear time.
    """
    if not isinstance(config, dict):
        raise InvalidArgument("adapter_config.json must hold a JSON object")
    for key in ("target_modules", "modules_to_save"):
        names = config.get(key)
        if names is None and key == "modules_to_save":
            continue
        if (
            not isinstance(names, list)
            or not 1 <= len(names) <= MAX_MODULE_NAMES
            or not all(isinstance(n, str) and _MODULE_NAME.fullmatch(n) for n in names)
        ):
            raise InvalidArgument(
                f"adapter_config.json: {key} must be a list of 1-{MAX_MODULE_NAMES} module names "
                f"(letters, digits, '_', '.', '-'; at most {MAX_MODULE_NAME_CHARS} characters each), "
                f"not {_preview(names)}: lmdock runs no patterns from a package"
            )
    for key in ("layers_pattern", "layers_to_transform", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise InvalidArgument(
                f"adapter_config.json: {key} is not accepted (PEFT would run it as a regular "
                "expression, or use it to pick layers); train on whole modules instead"
            )


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
