"""A task-vector profile on one of the market's base models, made without loading its weights.

The profile pins the base's weights (`base_weights_sha256`) and states its dimension: the
number of B-matrix entries of the profile's adapter, rank x (output width of each target
projection of the top `layers` decoder layers), read from a weightless `meta` skeleton of the
base built from its config.json. It equals what the client's recipe trains
(`lmdock.client.training.task_vector.task_vector_profile`, tested on a tiny Llama).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lmdock.common.base_model_files import base_weights_sha256
from lmdock.common.errors import FailedPrecondition, InvalidArgument
from lmdock.common.task_vector import TaskVectorProfile

__all__ = ["task_vector_profile_on"]


def task_vector_profile_on(base_model: str, folder: Path, **recipe: object) -> TaskVectorProfile:
    """The task-vector profile of `recipe` (TaskVectorProfile's fields; defaults for the rest)
    on base model `base_model`, whose Hugging Face folder is `folder`."""
    probe = TaskVectorProfile(base_model=base_model, base_sha256="0" * 64, dim=1, **recipe)  # type: ignore[arg-type]
    return replace(probe, base_sha256=base_weights_sha256(base_model, folder), dim=_b_entries(folder, probe))


def _b_entries(folder: Path, profile: TaskVectorProfile) -> int:
    import torch  # only when a profile is made
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise FailedPrecondition(
            f"base model {profile.base_model!r} has no usable causal-LM config: {exc}"
        ) from None
    total = int(config.num_hidden_layers)
    if profile.layers > total:
        raise InvalidArgument(f"the base model has {total} layers; cannot adapt the top {profile.layers}")
    entries = 0
    for name, module in model.named_modules():
        parts = name.split(".")
        numbers = [int(p) for p in parts if p.isdigit()]
        if parts[-1] in profile.targets and numbers and numbers[0] >= total - profile.layers:
            entries += profile.rank * int(module.out_features)
    if entries == 0:
        raise FailedPrecondition(
            f"the targets {list(profile.targets)} match no module of {profile.base_model!r}"
        )
    return entries
