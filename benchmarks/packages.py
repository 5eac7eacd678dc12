"""Real packages for the market benchmarks: an untrained LoRA adapter on the packaged MiniLM,
signed, with exact specs of random unit rows (every market with the default profile accepts them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.client.publish.training import tidy_adapter_folder
from lmdock.common.card import Card
from lmdock.common.embedder_files import DEFAULT_EMBEDDER, embedder_dir
from lmdock.common.package import TaskInfo, write_package
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import exact_spec

LABELS = ("negative", "positive")


def make_adapter(out: Path, *, rank: int = 4) -> Path:
    """A real (untrained) LoRA adapter on the packaged MiniLM, which every market accepts
    (36,864 bytes of weights per unit of `rank`, beside the classifier)."""
    from lmdock.client.models import quiet_model_libraries
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    quiet_model_libraries()

    model = AutoModelForSequenceClassification.from_pretrained(
        embedder_dir(DEFAULT_EMBEDDER), num_labels=len(LABELS)
    )
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=rank, target_modules=["query", "value"], modules_to_save=["classifier"]
    )
    get_peft_model(model, config).save_pretrained(out)
    tidy_adapter_folder(out)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = DEFAULT_EMBEDDER  # by name, as markets know it
    (out / "adapter_config.json").write_text(json.dumps(adapter_config))
    return out


def make_packages(
    folder: Path,
    profile: SpecProfile,
    count: int,
    *,
    prefix: str = "crash",
    key: Ed25519PrivateKey | None = None,
    rank: int = 4,
) -> list[Path]:
    """`count` packages of publisher "acme" signed by `key` (default: a new one), each with its
    own random exact spec."""
    adapter = make_adapter(folder / "adapter", rank=rank)
    files = {name: adapter / name for name in ("adapter_config.json", "adapter_model.safetensors")}
    key = key or Ed25519PrivateKey.generate()
    rng = np.random.default_rng(0)
    packages = []
    for i in range(count):
        rows = rng.standard_normal((60, profile.feature_dim))
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        name = f"{prefix}-{i:03d}"
        card = Card(id=name, name=name, domain="testing", licence="MIT", publisher="acme")
        out = folder / f"{name}.tar"
        write_package(
            out,
            files=files,
            key=key,
            card=card,
            base_model=DEFAULT_EMBEDDER,
            task=TaskInfo(kind="classification", labels=LABELS),
            spec=exact_spec(rows, profile),
        )
        packages.append(out)
    return packages
