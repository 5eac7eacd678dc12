"""The house rules: dependencies point one way, wings import downward, no private names cross modules.

The rooms and why they point the way they do: docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Top-level packages and the lmdock packages each may never import.
FORBIDDEN = {
    "common": ("lmdock.server", "lmdock.client", "lmdock.lab", "lmdock.federated"),
    "server": ("lmdock.client", "lmdock.lab", "lmdock.federated"),
    "client": ("lmdock.server", "lmdock.federated"),  # the lab: only lazily, by the demo command
    "federated": ("lmdock.server", "lmdock.lab"),
}
#: The client's wings: each imports only downward (task at the bottom; the consumer's flow on top
#: of it; training on top of that; the publisher's toolchain and the daemon on top of those; the
#: command line over all).
CLIENT_WINGS = {
    "task": ("lmdock.client.",),  # nothing of the client but itself: checked with the exception below
    "top": (
        "lmdock.client.training",
        "lmdock.client.publish",
        "lmdock.client.daemon",
        "lmdock.client.commands",
        "lmdock.client.cli",
    ),
    "training": (
        "lmdock.client.publish",
        "lmdock.client.daemon",
        "lmdock.client.commands",
        "lmdock.client.cli",
    ),
    "publish": ("lmdock.client.daemon", "lmdock.client.commands", "lmdock.client.cli"),
    "daemon": ("lmdock.client.publish", "lmdock.client.commands", "lmdock.client.cli"),
}


def _imports(path: Path) -> list[tuple[str, bool, tuple[str, ...]]]:
    """(module, at_top_level, names imported from it) for each import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top, tuple(a.name for a in node.names)))
    return found


def _module(path: Path) -> str:
    """The dotted lmdock name of a source file (client/task/read.py -> lmdock.client.task.read)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("lmdock", *(p for p in parts if p != "__init__")))


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _lazy_federation(path: Path, module: str, top_level: bool) -> bool:
    """`lmdock federate` (client/commands/federate.py) imports the federation, lazily, as the
    demo command does the lab."""
    federate = ROOT / "client" / "commands" / "federate.py"
    return path == federate and module.startswith("lmdock.federated") and not top_level


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    bad = []
    for path in _sources(package):
        for module, top_level, _ in _imports(path):
            if module.startswith(FORBIDDEN[package]) and not _lazy_federation(path, module, top_level):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
            if package == "client" and module.startswith("lmdock.lab") and top_level:
                bad.append(f"{path.relative_to(ROOT)} imports the lab at import time")
            if module == "proto" or module.startswith("proto."):
                bad.append(f"{path.relative_to(ROOT)} imports generated code as {module}")
    assert bad == []


def _wing(path: Path) -> str | None:
    parts = path.relative_to(ROOT / "client").parts
    if len(parts) == 1:
        return None if parts[0] == "cli.py" else "top"
    return parts[0] if parts[0] in CLIENT_WINGS else None


def test_client_wings_import_downward_only() -> None:
    bad = []
    for path in _sources("client"):
        wing = _wing(path)
        if wing is None:
            continue
        for module, _, _ in _imports(path):
            if wing == "task" and module.startswith("lmdock.client.task"):
                continue
            if module.startswith(CLIENT_WINGS[wing]):
                bad.append(f"{path.relative_to(ROOT)} ({wing}) imports {module}")
    assert bad == []


def test_no_private_name_is_imported_from_another_module() -> None:
    bad = []
    for folder in (*FORBIDDEN, "lab", "benchmarks"):
        for path in _sources(folder):
            for module, _, names in _imports(path):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if module.startswith("lmdock.") and module != _module(path) and private:
                    bad.append(f"{path.relative_to(ROOT)} imports {private} from {module}")
    assert bad == []


def test_the_wings_exist_where_the_architecture_page_says() -> None:
    """docs/architecture.md names every room; a renamed room must be renamed there too."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    rooms = (
        "client/task/",
        "client/training/",
        "client/publish/",
        "client/daemon/",
        "client/commands/",
        "server/index/",
        "federated/",
    )
    for room in rooms:
        assert (ROOT / room).is_dir(), room
        assert f"`{room}`" in page, f"docs/architecture.md does not describe {room}"


def test_common_touches_grpc_only_at_its_wire_edge() -> None:
    """common is the audited core: grpc enters it in one module, the error <-> status mapping."""
    users = sorted(
        str(path.relative_to(ROOT))
        for path in _sources("common")
        if any(module == "grpc" or module.startswith("grpc.") for module, _, _ in _imports(path))
    )
    assert users == ["common/grpc_errors.py"]
