"""Test helpers: real PEFT adapters on tiny models and signed packages, built fast."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.client.publish.training import tidy_adapter_folder
from lmdock.common.canonical import canonical_json
from lmdock.common.card import Card
from lmdock.common.market_types import LearnwareInfo
from lmdock.common.package import Manifest, TaskInfo, write_package
from lmdock.common.profile import SpecProfile
from lmdock.common.signing import sign_manifest
from lmdock.common.spec import EXACT, Privacy, Spec, exact_spec
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.common.task_vector_member import TASK_VECTOR_FILE, TaskVectorInfo, write_task_vector
from peft import LoraConfig, TaskType, get_peft_model

LABELS = ("negative", "positive")


def random_unit_rows(
    rng: np.random.Generator, n: int, dim: int, centre: np.ndarray | None = None
) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    if centre is not None:
        x = x + centre
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cluster_spec(profile: SpecProfile, seed: int, n: int = 200) -> Spec:
    """An exact spec of a synthetic cluster of unit vectors (direction fixed by `seed`)."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(profile.feature_dim) * 0.6
    return exact_spec(random_unit_rows(rng, n, profile.feature_dim, centre), profile)


def make_adapter(
    base: Path, out: Path, *, kind: str = "classification", base_name: str | None = None
) -> Path:
    """An untrained but real LoRA adapter (PEFT format) for a tiny base model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(0)
    if kind == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(LABELS))
        config = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "value"], modules_to_save=["classifier"]
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(base)
        config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    tidy_adapter_folder(out)
    if base_name is not None:  # named after a market-registered base model, not its folder
        adapter_config = json.loads((out / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = base_name
        (out / "adapter_config.json").write_text(json.dumps(adapter_config))
    return out


def adapter_variant(
    adapter: Path,
    out: Path,
    *,
    config: dict[str, Any] | None = None,
    tensors: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Path:
    """A copy of an adapter folder with config keys replaced and/or its tensors rewritten."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**adapter_config, **(config or {})}))
    weights = load_file(adapter / "adapter_model.safetensors")
    save_file(tensors(weights) if tensors else weights, out / "adapter_model.safetensors")
    return out


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    """A tar header for a member of the given type, size and link target (hostile-package tests)."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def rewrite_tar(src: Path, dst: Path, *, change=None, add=None, drop=()) -> Path:
    """Copy a package tar, altering members: change={name: bytes}, add=[TarInfo, bytes|None]."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin:
            if member.name in drop:
                continue
            data = tin.extractfile(member).read()
            if change and member.name in change:
                data = change[member.name]
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
        for info, data in add or []:
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def make_package(
    out: Path,
    adapter: Path,
    *,
    key: Ed25519PrivateKey | None,
    spec: Spec,
    learnware_id: str = "test-learnware",
    base_model: str,
    kind: str = "classification",
    domain: str = "testing",
    publisher: str = "tester",
    tags: tuple[str, ...] = (),
    task: TaskInfo | None = None,
    extra_files: dict[str, Path] | None = None,
    **manifest_fields: Any,
) -> Manifest:
    task = task or TaskInfo(kind=kind, labels=LABELS if kind == "classification" else ())
    card = Card(
        id=learnware_id,
        name=f"Test {learnware_id}",
        domain=domain,
        licence="MIT",
        publisher=publisher,
        tags=tags,
    )
    return write_package(
        out,
        files={
            "adapter_config.json": adapter / "adapter_config.json",
            "adapter_model.safetensors": adapter / "adapter_model.safetensors",
            **(extra_files or {}),
        },
        key=key,
        card=card,
        base_model=base_model,
        task=task,
        spec=spec,
        **manifest_fields,
    )


def task_vector_package(
    out: Path,
    adapter: Path,
    *,
    key: Ed25519PrivateKey,
    spec: Spec,
    vector_profile: TaskVectorProfile,
    values: np.ndarray,
    privacy: Privacy = EXACT,
    **fields: Any,
) -> Manifest:
    """A generative package carrying `values` as its task vector under `vector_profile`."""
    vector_file = out.with_suffix(".task_vector.safetensors")
    write_task_vector(vector_file, values)
    return make_package(
        out,
        adapter,
        key=key,
        spec=spec,
        kind="generation",
        extra_files={TASK_VECTOR_FILE: vector_file},
        task_vector=TaskVectorInfo(vector_profile, privacy),
        **fields,
    )


def as_v1_package(src: Path, dst: Path, key: Ed25519PrivateKey, profile: SpecProfile) -> Path:
    """`src` as lmdock wrote packages before format v2: format "lmdock-learnware/1", the spec
    under the profile's v1 id, signed over the manifest's v1 canonical JSON."""
    with tarfile.open(src) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.loads(member.read())
    manifest["format"] = "lmdock-learnware/1"
    manifest["spec"]["profile_id"] = profile.legacy_profile_id
    signature = sign_manifest(manifest, key)
    assert base64.b64decode(signature.signature) == key.sign(canonical_json(manifest))  # the v1 bytes
    change = {
        "manifest.json": json.dumps(manifest, indent=2).encode(),
        "signature.json": json.dumps(signature.to_dict(), indent=2).encode(),
    }
    return rewrite_tar(src, dst, change=change)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds (a bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def listed(learnware_id: str, spec: Spec) -> LearnwareInfo:
    """A catalogue entry for index tests: the spec is all that matters, no package behind it."""
    return LearnwareInfo(
        card=Card(id=learnware_id, name=learnware_id, domain="test", licence="-", publisher="-"),
        base_model="-",
        task=TaskInfo("generation"),
        spec=spec,
        package_sha256="0" * 64,
        package_size=1,
    )
