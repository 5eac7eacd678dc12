"""What a learnware package must satisfy before the market accepts it.

`read_package` (common) already refused links, folders, '..', file types other than
safetensors, JSON and the model card, files missing from or extra to the manifest, hash
mismatches and bad signatures. Here the market adds its own rules, each with a precise error,
reading the files where they lie in the uploaded tar (nothing is unpacked):

* the spec matches the market's profile (id, version, dimension, finite values);
* metadata stays within size limits;
* adapter_config.json is a LoRA config for the declared, registered base model and task;
* the target modules exist in that base model, and every tensor has exactly the name and
  shape PEFT would create for it (checked on a weightless `meta` skeleton of the base model);
* every safetensors file has a valid header (`safetensors_header`) and holds finite
  floating-point tensors only;
* a task vector (`check_task_vector`) is under a task-vector profile the market serves: exactly
  one F32 tensor of that profile's dim, finite, its noise and norm within the profile's bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO

from lmdock.common.card import Card
from lmdock.common.errors import FailedPrecondition, InvalidArgument
from lmdock.common.package import Manifest
from lmdock.common.package_reader import ArchivedPackage
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import Spec
from lmdock.common.task_vector_member import TASK_VECTOR_FILE, read_task_vector
from lmdock.common.task_vector_search import TaskVectorIndexing
from lmdock.server.base_models import BaseModels
from lmdock.server.safetensors_header import SafetensorsHeader, read_header
from lmdock.server.tensor_scan import non_finite_tensor

__all__ = ["check_package", "check_task_vector"]

MAX_TAGS, MAX_TAG_CHARS, MAX_DESCRIPTION_CHARS, MAX_VERSION_CHARS = 32, 64, 16_384, 64
_TASK_TYPES = {"classification": "SEQ_CLS", "generation": "CAUSAL_LM"}


def check_package(package: ArchivedPackage, profile: SpecProfile, base_models: BaseModels) -> None:
    """Raise InvalidArgument naming the first rule the verified `package` breaks."""
    manifest = package.manifest
    manifest.spec.check_against(profile)
    _check_metadata(manifest.card)
    config = package.json_files["adapter_config.json"]  # a required file, parsed strictly by the reader
    if not isinstance(config, dict):
        raise InvalidArgument("adapter_config.json must hold a JSON object")
    _check_adapter_config(manifest, config)
    base_config = base_models.config(manifest.base_model)
    headers: dict[str, SafetensorsHeader] = {}
    with package.archive.open("rb") as archive:
        for name in sorted(manifest.files):
            if name.endswith(".safetensors"):
                headers[name] = _check_weights(package, archive, name)
    expected = _expected_tensors(manifest, config, base_config)
    shapes = {t.name: t.shape for t in headers["adapter_model.safetensors"].tensors}
    _check_shapes(manifest.base_model, shapes, expected)


def check_task_vector(package: ArchivedPackage, served: Mapping[str, TaskVectorIndexing]) -> Spec | None:
    """The verified package's task vector as a spec (None when it has none), once it passes every
    rule: FailedPrecondition for a profile this market does not serve, else InvalidArgument."""
    manifest = package.manifest
    if manifest.task_vector is None:
        return None
    declared = manifest.task_vector.profile
    indexing = served.get(declared.profile_id)
    if indexing is None:
        ids = ", ".join(repr(i) for i in served) or "none"
        raise FailedPrecondition(
            f"the package's task vector is under task-vector profile {declared.profile_id!r}, which this "
            f"market does not serve (it serves {ids}): compute it under a served one, or leave it out"
        )
    # the id is the hash of every field (checked when the manifest was read): the same profile
    member = package.members[TASK_VECTOR_FILE]  # its size bounded by the reader
    with package.archive.open("rb") as archive:
        archive.seek(member.offset)
        values = read_task_vector(archive.read(member.size), indexing.feature_dim)
    spec = manifest.task_vector.spec(values)
    spec.check_against(indexing)
    return spec


def _check_metadata(card: Card) -> None:
    if len(card.tags) > MAX_TAGS or any(not t or len(t) > MAX_TAG_CHARS for t in card.tags):
        raise InvalidArgument(f"at most {MAX_TAGS} tags of 1-{MAX_TAG_CHARS} characters each")
    if len(card.description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION_CHARS} characters")
    if not card.version or len(card.version) > MAX_VERSION_CHARS:
        raise InvalidArgument(f"version must be 1-{MAX_VERSION_CHARS} characters")


def _check_adapter_config(manifest: Manifest, config: dict[str, Any]) -> None:
    if config.get("peft_type") != "LORA":
        raise InvalidArgument(
            f"adapter_config.json: peft_type must be 'LORA', got {config.get('peft_type')!r}"
        )
    declared = config.get("base_model_name_or_path")
    if declared != manifest.base_model:
        raise InvalidArgument(
            f"adapter_config.json names base model {declared!r}, the manifest says {manifest.base_model!r}"
        )
    expected_task = _TASK_TYPES[manifest.task.kind]
    if config.get("task_type") != expected_task:
        raise InvalidArgument(
            f"adapter_config.json: task_type {config.get('task_type')!r} does not fit a "
            f"{manifest.task.kind} learnware (need {expected_task!r})"
        )


def _skeleton(manifest: Manifest, base_config: dict[str, Any]) -> Any:
    """The base model with the task's head, built on the meta device (shapes only, no weights)."""
    import torch  # imported at the first upload, not at start (most of the market's import time)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    fields = dict(base_config)
    try:
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    except (ValueError, KeyError) as exc:
        raise FailedPrecondition(
            f"base model {manifest.base_model!r} has an unusable config: {exc}"
        ) from None
    if manifest.task.kind == "classification":
        config.num_labels = len(manifest.task.labels)
        builder: Any = AutoModelForSequenceClassification
    else:
        builder = AutoModelForCausalLM
    with torch.device("meta"):
        try:
            return builder.from_config(config)
        except ValueError as exc:
            raise InvalidArgument(
                f"base model {manifest.base_model!r} cannot serve a {manifest.task.kind} learnware: {exc}"
            ) from None


def _check_targets(manifest: Manifest, targets: Any, module_names: list[str]) -> None:
    for target in targets:  # a list of names: `check_files` refused anything else (adapter_config)
        if not any(n == target or n.endswith("." + target) for n in module_names):
            raise InvalidArgument(
                f"target module {target!r} does not exist in base model {manifest.base_model!r}"
            )


def _expected_tensors(
    manifest: Manifest, config: dict[str, Any], base_config: dict[str, Any]
) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor PEFT saves for this adapter config on this base model."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    model = _skeleton(manifest, base_config)
    try:  # what `LoraConfig.from_pretrained` does with the file's JSON, from the JSON read already
        fields = {key: value for key, value in config.items() if key != "runtime_config"}
        lora = LoraConfig.from_peft_type(**LoraConfig.check_kwargs(**fields))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"adapter_config.json is not a valid LoRA config: {exc}") from None
    _check_targets(manifest, lora.target_modules, [name for name, _ in model.named_modules()])
    lora.init_lora_weights = False  # shapes only: no initialisation work on the skeleton
    lora.base_model_name_or_path = None  # the skeleton has no name; spares PEFT's rename warning
    try:
        with torch.device("meta"):  # else PEFT allocates and initialises every LoRA matrix on the CPU
            peft_model = get_peft_model(model, lora)
    except Exception as exc:  # PEFT raises many types for configs that do not fit the model
        raise InvalidArgument(
            f"adapter_config.json does not fit base model {manifest.base_model!r}: {exc}"
        ) from None
    return {name: tuple(t.shape) for name, t in get_peft_model_state_dict(peft_model).items()}


def _check_shapes(base: str, got: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    for name, shape in sorted(got.items()):
        if name not in expected:
            raise InvalidArgument(f"tensor {name!r} is not a weight of this adapter on base model {base!r}")
        if shape != expected[name]:
            raise InvalidArgument(
                f"tensor {name!r} has shape {list(shape)}, base model {base!r} needs {list(expected[name])}"
            )
    missing = sorted(set(expected) - set(got))
    if missing:
        raise InvalidArgument(f"adapter_model.safetensors lacks {len(missing)} tensors, e.g. {missing[0]!r}")


def _check_weights(package: ArchivedPackage, archive: BinaryIO, name: str) -> SafetensorsHeader:
    """The file's checked header, once its tensors are known to be all finite floats."""
    member = package.members[name]
    header = read_header(archive, start=member.offset, size=member.size, name=name)
    if not header.tensors:
        raise InvalidArgument(f"{name} holds no tensors")
    bad = non_finite_tensor(package.archive, header)
    if bad is not None:
        raise InvalidArgument(f"{name}: tensor {bad!r} contains NaN or Inf")
    return header
