"""The house rules: dependencies point one way; generated code is not imported as `proto`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "common": ("lmdock.server", "lmdock.client", "lmdock.lab"),
    "server": ("lmdock.client", "lmdock.lab"),
    "client": ("lmdock.server",),  # the lab is only imported lazily by the demo command
}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at_top_level) for each import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    bad = []
    for path in (ROOT / package).rglob("*.py"):
        for module, top_level in _imports(path):
            if module.startswith(FORBIDDEN[package]) and not (
                package == "client" and module.startswith("lmdock.lab") and not top_level
            ):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
            if module == "proto" or module.startswith("proto."):
                bad.append(f"{path.relative_to(ROOT)} imports generated code as {module}")
    assert bad == []


def test_client_imports_the_lab_only_lazily() -> None:
    for path in (ROOT / "client").rglob("*.py"):
        for module, top_level in _imports(path):
            assert not (module.startswith("lmdock.lab") and top_level), path
