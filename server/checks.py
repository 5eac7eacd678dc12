"""What a learnware package must satisfy before the market accepts it.

`unpack_package` (common) already refused links, folders, '..', disallowed file types, files
missing from or extra to the manifest, hash mismatches and bad signatures. Here the market
adds its own rules: the spec matches the market's profile, the adapter config is a PEFT config
for the declared base model, and the weights are finite floating-point safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import Manifest
from lmdock.common.profile import SpecProfile
from safetensors import SafetensorError, safe_open

__all__ = ["check_package"]


def check_package(manifest: Manifest, folder: Path, profile: SpecProfile) -> None:
    """Raise InvalidArgument naming the first rule the unpacked package in `folder` breaks."""
    manifest.spec.check_against(profile)
    _check_adapter_config(manifest, json.loads((folder / "adapter_config.json").read_text()))
    _check_weights(folder / "adapter_model.safetensors")


def _check_adapter_config(manifest: Manifest, config: object) -> None:
    if not isinstance(config, dict):
        raise InvalidArgument("adapter_config.json must hold a JSON object")
    if config.get("peft_type") != "LORA":
        raise InvalidArgument(
            f"adapter_config.json: peft_type must be 'LORA', got {config.get('peft_type')!r}"
        )
    declared = config.get("base_model_name_or_path")
    if declared != manifest.base_model:
        raise InvalidArgument(
            f"adapter_config.json names base model {declared!r}, the manifest says {manifest.base_model!r}"
        )
    expected_task = {"classification": "SEQ_CLS", "generation": "CAUSAL_LM"}[manifest.task.kind]
    if config.get("task_type") != expected_task:
        raise InvalidArgument(
            f"adapter_config.json: task_type {config.get('task_type')!r} does not fit a "
            f"{manifest.task.kind} learnware (need {expected_task!r})"
        )


def _check_weights(path: Path) -> None:
    try:
        with safe_open(str(path), framework="pt") as weights:
            names = list(weights.keys())
            if not names:
                raise InvalidArgument("adapter_model.safetensors holds no tensors")
            for name in names:
                tensor = weights.get_tensor(name)
                if not tensor.is_floating_point():
                    raise InvalidArgument(
                        f"tensor {name!r} has dtype {tensor.dtype}; adapters hold floats only"
                    )
                if not bool(torch.isfinite(tensor).all()):
                    raise InvalidArgument(f"tensor {name!r} contains NaN or Inf")
    except SafetensorError as exc:
        raise InvalidArgument(f"adapter_model.safetensors is not a valid safetensors file: {exc}") from None
