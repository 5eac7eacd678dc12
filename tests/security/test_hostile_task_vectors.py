"""Hostile task vectors (issue 22): each refusal of an uploaded package's task vector, and of a
task-vector search, with its precise status, through a real market over gRPC."""

from __future__ import annotations

import dataclasses
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from lmdock.client.connection import MarketClient
from lmdock.client.training.task_vector import task_vector_profile
from lmdock.common.errors import FailedPrecondition, InvalidArgument
from lmdock.common.hashing import sha256_file
from lmdock.common.signing import generate_key, sign_manifest
from lmdock.common.spec import EXACT, Privacy, Spec
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.common.task_vector_member import TASK_VECTOR_FILE
from lmdock.common.task_vector_search import TaskVectorIndexing
from lmdock.server.auth import AccessPolicy
from safetensors.numpy import save_file

from tests.helpers import cluster_spec, make_adapter, rewrite_tar, task_vector_package
from tests.market_helpers import Running, running_market

KEY = generate_key()


@pytest.fixture(scope="module")
def vector_profile(tiny_llama: Path) -> TaskVectorProfile:
    return task_vector_profile(str(tiny_llama), layers=1, rank=2, max_tokens=24, steps=2, clip_norm=0.5)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return make_adapter(tiny_llama, tmp_path_factory.mktemp("adapter") / "a", kind="generation")


@pytest.fixture()
def market(tmp_path: Path, profile, vector_profile) -> Iterator[Running]:
    with running_market(
        tmp_path / "market",
        profile,
        access=AccessPolicy.open_demo(),
        allow_local_base_models=True,
        task_vector_profiles=(vector_profile,),
    ) as running:
        yield running


def inside(vector_profile: TaskVectorProfile, seed: int = 0) -> np.ndarray:
    """A vector an honest exact run could make: half the largest norm, R = eta T C."""
    v = np.random.default_rng(seed).standard_normal(vector_profile.dim)
    return (v / np.linalg.norm(v) * TaskVectorIndexing(vector_profile).clip_radius / 2).astype(np.float32)


def package(tmp_path: Path, adapter: Path, profile, tiny_llama: Path, vector_profile, values, **kw) -> Path:
    out = tmp_path / "tv.tar"
    task_vector_package(
        out,
        adapter,
        key=KEY,
        spec=cluster_spec(profile, seed=1),
        vector_profile=vector_profile,
        values=values,
        base_model=str(tiny_llama),
        **kw,
    )
    return out


def upload(market: Running, path: Path) -> None:
    with MarketClient(market.address) as client:
        client.upload(path)


def test_an_honest_vector_is_accepted(market, tmp_path, adapter, profile, tiny_llama, vector_profile) -> None:
    upload(market, package(tmp_path, adapter, profile, tiny_llama, vector_profile, inside(vector_profile)))
    assert len(market.market.index.of(vector_profile.profile_id)) == 1


def test_a_profile_the_market_does_not_serve_is_a_failed_precondition(
    market, tmp_path, adapter, profile, tiny_llama, vector_profile
) -> None:
    other = dataclasses.replace(vector_profile, seed=7)
    path = package(tmp_path, adapter, profile, tiny_llama, other, inside(other))
    with pytest.raises(FailedPrecondition, match="does not serve"):
        upload(market, path)
    assert len(market.market.index) == 0


HOSTILE_FILES = {
    "short": (lambda good: {"task_vector": good[:3]}, r"shape \[3\], its profile's dim needs"),
    "float16": (lambda good: {"task_vector": good.astype(np.float16)}, "dtype float16, not float32"),
    "two tensors": (lambda good: {"task_vector": good, "second": good}, "exactly one tensor"),
    "inf": (lambda good: {"task_vector": np.where(np.arange(good.size) == 3, np.inf, good)}, "NaN or Inf"),
}


@pytest.mark.parametrize("case", HOSTILE_FILES)
def test_a_malformed_vector_file_is_invalid(
    market, tmp_path, adapter, profile, tiny_llama, vector_profile, case
) -> None:
    make, message = HOSTILE_FILES[case]
    good = inside(vector_profile)
    written = {
        name: np.ascontiguousarray(t, dtype=t.dtype if t.dtype != np.float64 else np.float32)
        for name, t in make(good).items()
    }
    path = package(tmp_path, adapter, profile, tiny_llama, vector_profile, good)
    hostile = tmp_path / "hostile.safetensors"
    save_file(written, str(hostile))
    # the manifest lists the hostile file's sha256, re-signed: only its contents are wrong
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.loads(member.read())
    manifest["files"][TASK_VECTOR_FILE] = {"sha256": sha256_file(hostile), "size": hostile.stat().st_size}
    signature = sign_manifest(manifest, KEY)
    change = {
        "manifest.json": json.dumps(manifest).encode(),
        "signature.json": json.dumps(signature.to_dict()).encode(),
        TASK_VECTOR_FILE: hostile.read_bytes(),
    }
    with pytest.raises(InvalidArgument, match=message):
        upload(market, rewrite_tar(path, tmp_path / "bad.tar", change=change))


def test_a_vector_noisier_than_the_profile_allows_is_invalid(
    market, tmp_path, adapter, profile, tiny_llama, vector_profile
) -> None:
    bound = TaskVectorIndexing(vector_profile).max_sigma
    noisy = Privacy(epsilon=1.0, delta=1e-6, sigma=2 * bound, size_bucket=100)
    values = np.random.default_rng(0).normal(0, 2 * bound, vector_profile.dim).astype(np.float32)
    path = package(tmp_path, adapter, profile, tiny_llama, vector_profile, values, privacy=noisy)
    with pytest.raises(InvalidArgument, match="spec sigma must be in"):
        upload(market, path)


def test_a_vector_longer_than_its_recipe_can_make_is_invalid(
    market, tmp_path, adapter, profile, tiny_llama, vector_profile
) -> None:
    """An exact vector moves by at most eta T C: a longer one would buy weight it did not learn."""
    path = package(tmp_path, adapter, profile, tiny_llama, vector_profile, 4 * inside(vector_profile))
    with pytest.raises(InvalidArgument, match="exceeds"):
        upload(market, path)


def test_a_description_whose_id_is_not_its_contents_is_invalid(
    market, tmp_path, adapter, profile, tiny_llama, vector_profile
) -> None:
    path = package(tmp_path, adapter, profile, tiny_llama, vector_profile, inside(vector_profile))
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.loads(member.read())
    manifest["task_vector"]["profile"]["steps"] += 1  # claims the served id for another recipe
    signature = sign_manifest(manifest, KEY)
    change = {
        "manifest.json": json.dumps(manifest).encode(),
        "signature.json": json.dumps(signature.to_dict()).encode(),
    }
    with pytest.raises(InvalidArgument, match="profile_id does not match"):
        upload(market, rewrite_tar(path, tmp_path / "bad.tar", change=change))


def test_hostile_task_vector_searches_are_invalid(market, vector_profile) -> None:
    bound = TaskVectorIndexing(vector_profile).max_sigma
    good = inside(vector_profile)
    with MarketClient(market.address) as client:
        client.search(Spec(vector_profile.profile_id, good, EXACT))  # an empty index answers
        with pytest.raises(InvalidArgument, match="the profile's dimension is"):
            client.search(Spec(vector_profile.profile_id, good[:-1], EXACT))
        noisy = Privacy(epsilon=1.0, delta=1e-6, sigma=2 * bound, size_bucket=100)
        with pytest.raises(InvalidArgument, match="spec sigma must be in"):
            client.search(Spec(vector_profile.profile_id, good, noisy))
        with pytest.raises(InvalidArgument, match="exceeds"):
            client.search(Spec(vector_profile.profile_id, 4 * good, EXACT))
        with pytest.raises(InvalidArgument, match=f"task vectors: '{vector_profile.profile_id}'"):
            client.search(Spec("0123456789abcdef", good, EXACT))
