"""A package's optional task vector (issue 22): `task_vector.safetensors` listed by sha256, the
manifest's `task_vector` field, both read back with every header checked; packages without
one are written exactly as before."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from lmdock.client.publish.package import exact_task_vector
from lmdock.client.training.task_vector import compute_task_vector, task_vector_profile
from lmdock.common.errors import InvalidArgument
from lmdock.common.package_reader import unpack_package
from lmdock.common.signing import generate_key
from lmdock.common.spec import EXACT
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.common.task_vector_member import (
    TASK_VECTOR_FILE,
    TaskVectorInfo,
    read_task_vector,
    write_task_vector,
)
from safetensors.numpy import save_file

from tests.helpers import cluster_spec, make_adapter, make_package

TOY = TaskVectorProfile(base_model="toy-base", base_sha256="a" * 64, dim=6, layers=1, rank=1)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_adapter(tiny_bert, tmp_path_factory.mktemp("adapter") / "a")


def packaged(tmp_path: Path, adapter: Path, profile, vector_file: Path, info: TaskVectorInfo) -> Path:
    out = tmp_path / "tv.tar"
    make_package(
        out,
        adapter,
        key=generate_key(),
        spec=cluster_spec(profile, 1),
        base_model="bert",
        extra_files={TASK_VECTOR_FILE: vector_file},
        task_vector=info,
    )
    return out


def test_a_task_vector_travels_listed_by_sha256_and_described(tmp_path: Path, adapter: Path, profile) -> None:
    vector = np.linspace(-1, 1, TOY.dim, dtype=np.float32)
    write_task_vector(tmp_path / TASK_VECTOR_FILE, vector)
    package = packaged(tmp_path, adapter, profile, tmp_path / TASK_VECTOR_FILE, TaskVectorInfo(TOY, EXACT))
    manifest, _ = unpack_package(package, tmp_path / "out")
    assert manifest.task_vector == TaskVectorInfo(TOY, EXACT)
    assert TASK_VECTOR_FILE in manifest.files
    described = manifest.to_dict()["task_vector"]
    assert described["profile"]["profile_id"] == TOY.profile_id and described["privacy"]["epsilon"] is None
    spec = manifest.task_vector.spec(vector)
    assert spec.profile_id == TOY.profile_id and spec.privacy.sigma == 0.0


def test_a_package_without_one_has_neither_file_nor_field(tmp_path: Path, adapter: Path, profile) -> None:
    manifest = make_package(
        tmp_path / "p.tar", adapter, key=generate_key(), spec=cluster_spec(profile, 1), base_model="bert"
    )
    assert manifest.task_vector is None and "task_vector" not in manifest.to_dict()


def test_file_and_field_come_together(tmp_path: Path, adapter: Path, profile) -> None:
    write_task_vector(tmp_path / TASK_VECTOR_FILE, np.zeros(TOY.dim, dtype=np.float32))
    with pytest.raises(InvalidArgument, match="if and only if"):
        make_package(
            tmp_path / "a.tar",
            adapter,
            key=generate_key(),
            spec=cluster_spec(profile, 1),
            base_model="bert",
            extra_files={TASK_VECTOR_FILE: tmp_path / TASK_VECTOR_FILE},
        )
    with pytest.raises(InvalidArgument, match="if and only if"):
        make_package(
            tmp_path / "b.tar",
            adapter,
            key=generate_key(),
            spec=cluster_spec(profile, 1),
            base_model="bert",
            task_vector=TaskVectorInfo(TOY, EXACT),
        )


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"task_vector": np.zeros(5, dtype=np.float32)}, r"shape \[5\], its profile's dim needs \[6\]"),
        ({"task_vector": np.zeros(6, dtype=np.float64)}, "dtype float64, not float32"),
        ({"task_vector": np.zeros((2, 3), dtype=np.float32)}, r"shape \[2, 3\]"),
        ({"other": np.zeros(6, dtype=np.float32)}, "exactly one tensor 'task_vector'"),
        (
            {"task_vector": np.zeros(6, dtype=np.float32), "extra": np.zeros(1, dtype=np.float32)},
            "exactly one tensor",
        ),
        ({"task_vector": np.array([0, 1, np.nan, 0, 0, 0], dtype=np.float32)}, "NaN or Inf"),
    ],
)
def test_a_reader_checks_the_vectors_header_and_values(
    tmp_path: Path, adapter: Path, profile, tensors: dict, message: str
) -> None:
    save_file(tensors, str(tmp_path / TASK_VECTOR_FILE))
    package = packaged(tmp_path, adapter, profile, tmp_path / TASK_VECTOR_FILE, TaskVectorInfo(TOY, EXACT))
    with pytest.raises(InvalidArgument, match=message):
        unpack_package(package, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unknown_field_in_the_description_is_refused(tmp_path: Path, adapter: Path, profile) -> None:
    write_task_vector(tmp_path / TASK_VECTOR_FILE, np.zeros(TOY.dim, dtype=np.float32))
    package = packaged(tmp_path, adapter, profile, tmp_path / TASK_VECTOR_FILE, TaskVectorInfo(TOY, EXACT))
    with tarfile.open(package) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.loads(member.read())
    manifest["task_vector"]["note"] = "x"
    with pytest.raises(InvalidArgument, match="exactly profile and privacy"):
        TaskVectorInfo.from_dict(manifest["task_vector"])


def test_a_publishers_vector_is_the_exact_one_of_its_texts(tmp_path: Path, tiny_llama: Path) -> None:
    tv = task_vector_profile(
        str(tiny_llama), layers=1, rank=2, max_tokens=24, steps=2, learning_rate=1.0, clip_norm=0.5
    )
    texts = [f"the patient reports {i} days of fever and cough" for i in range(12)]
    info = exact_task_vector(texts, tv, tmp_path / TASK_VECTOR_FILE)
    assert info == TaskVectorInfo(tv, EXACT)
    written = read_task_vector((tmp_path / TASK_VECTOR_FILE).read_bytes(), tv.dim)
    assert np.array_equal(written, compute_task_vector(texts, tv).values)
