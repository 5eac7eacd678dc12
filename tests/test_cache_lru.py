"""The adapter cache: LRU eviction under a size cap, pinned keys, atomic small files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lmdock.client.cache import AdapterCache
from lmdock.common.errors import IntegrityError
from lmdock.common.hashing import sha256_file
from lmdock.common.market_types import LearnwareInfo
from lmdock.common.signing import generate_key

from tests.helpers import cluster_spec, make_adapter, make_package

IDS = ("lw-a", "lw-b", "lw-c")


@pytest.fixture()
def cache(tiny_bert: Path, tmp_path: Path, profile) -> AdapterCache:
    """A cache holding three installed learnwares, used in the order a, b, c."""
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    cache = AdapterCache(tmp_path / "cache")
    key = generate_key()
    for age, learnware_id in zip((300, 200, 100), IDS, strict=True):
        package = tmp_path / f"{learnware_id}.tar"
        manifest = make_package(
            package,
            adapter,
            key=key,
            spec=cluster_spec(profile, 1),
            learnware_id=learnware_id,
            base_model=str(tiny_bert),
        )
        info = LearnwareInfo.from_manifest(
            manifest, sha256=sha256_file(package), size=package.stat().st_size, created_at=""
        )
        cache.install(info, package)
        sidecar = cache.root / "learnwares" / f"{learnware_id}.sha256"
        past = sidecar.stat().st_mtime - age
        os.utime(sidecar, (past, past))
    return cache


def test_entries_are_least_recently_used_first_and_load_refreshes(cache: AdapterCache) -> None:
    assert [e.learnware_id for e in cache.entries()] == list(IDS)
    cache.load("lw-a")
    assert [e.learnware_id for e in cache.entries()] == ["lw-b", "lw-c", "lw-a"]
    assert all(e.size > 0 for e in cache.entries())


def test_enforce_cap_evicts_least_recently_used_except_kept(cache: AdapterCache) -> None:
    size = cache.entries()[0].size
    assert cache.enforce_cap(3 * size) == []
    evicted = cache.enforce_cap(2 * size, keep=frozenset({"lw-a"}))
    assert evicted == ["lw-b"] and [e.learnware_id for e in cache.entries()] == ["lw-a", "lw-c"]
    assert not cache.has("lw-b") and cache.installed_sha256("lw-b") is None
    # learnwares in use stay even when they alone exceed the cap
    assert cache.enforce_cap(1, keep=frozenset({"lw-a", "lw-c"})) == []


def test_load_needs_the_pinned_key(cache: AdapterCache) -> None:
    pins = cache.root / "publishers.json"
    pins.write_text("{not json")
    with pytest.raises(IntegrityError, match=r"publishers\.json is damaged"):
        cache.load("lw-a")
    pins.write_text("{}")
    with pytest.raises(IntegrityError, match="no key is pinned for publisher 'tester'"):
        cache.load("lw-a")


def test_small_files_leave_no_temporaries(cache: AdapterCache) -> None:
    leftovers = [p.name for p in cache.root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []
    assert (cache.root / "learnwares" / "lw-a.sha256").read_text() == cache.installed_sha256("lw-a")
