"""The task-vector spec of a data set's texts, exact (a publisher's) or under DP-SGD (a consumer's).

Recipe (every number from the `TaskVectorProfile`, `lmdock.common.task_vector`): LoRA of rank r
(alpha = r, no dropout) on the profile's targets in the top `layers` layers of the base model, A
fixed by the profile (`lora_a`) and frozen, B from 0; `steps` full-batch steps of plain SGD at
learning rate eta on each text's mean next-token loss (`TaskModel.text_loss`), every record's
gradient clipped to C = clip_norm by Opacus. The vector is the B matrices, flattened in module
order. The lower layers are frozen and unadapted, so their activations are computed once and
every step runs the top layers only (`layer_split`).

Privacy (one record the unit, replace-one, n public as in every DP-SGD run). With noise
multiplier z each step releases (sum_i clip(g_i) + N(0, z^2 C^2 I)) / n; replacing one record
moves the sum by at most 2C, so the T steps compose to mu-GDP with mu = 2 sqrt(T) / z and the
smallest z for (epsilon, delta) is exact (`accounting.dp_sgd_noise_multiplier` at q = 1). SGD
makes the vector B_T = -eta sum_t (mean clipped gradient_t + noise_t), so its DP noise is
Gaussian with sd eta z C sqrt(T) / n per coordinate (`TaskVector.sigma`; the gradients at later
steps depend on earlier noise, which is post-processing). The noise comes from ChaCha20, as all
of lmdock's DP-SGD (`opacus_noise`). A publisher's exact vector runs the same clipping with z = 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch
from lmdock.client.ledger import Debit, Ledger
from lmdock.client.models import resolve_base_model
from lmdock.client.privacy_unit import DataSet
from lmdock.client.training.dp_sgd import MAX_EPSILON, DPConfig, DPPlan, PrivateTraining, plan_dp_sgd
from lmdock.client.training.objectives import TaskModel, load_task_model
from lmdock.common.accounting import max_delta
from lmdock.common.base_model_files import base_weights_sha256
from lmdock.common.errors import FailedPrecondition, InvalidArgument
from lmdock.common.package import TaskInfo
from lmdock.common.spec import Privacy, Spec, size_bucket
from lmdock.common.task_vector import TaskVectorProfile, lora_a

__all__ = [
    "TaskVector",
    "clipped",
    "compute_task_vector",
    "one_step_vector",
    "plan_task_vector",
    "record_gradients",
    "release_task_vector",
    "task_vector_profile",
]

GENERATION = TaskInfo(kind="generation")


@dataclass(frozen=True)
class TaskVector:
    values: npt.NDArray[np.float32]  # the profile's dim coordinates
    sigma: float  # sd of the DP noise in each coordinate; 0 for an exact vector
    records: int
    seconds: float


def task_vector_profile(base_model: str, **recipe: object) -> TaskVectorProfile:
    """The profile of `recipe` (TaskVectorProfile's fields) on `base_model`, its weights pinned
    and its dimension read from the model's shapes."""
    folder = resolve_base_model(base_model)
    # the hash and the dimension are placeholders until the weights and the model say them
    probe = TaskVectorProfile(base_model=base_model, base_sha256="0" * 64, dim=1, **recipe)  # type: ignore[arg-type]
    tm = _adapted(probe, folder)
    dim = sum(b.numel() for _, b in _b_matrices(tm))
    return replace(probe, base_sha256=base_weights_sha256(base_model, folder), dim=dim)


def plan_task_vector(profile: TaskVectorProfile, *, records: int, epsilon: float, delta: float) -> DPPlan:
    """The DP-SGD run of a task vector (full batch: q = 1, `steps` steps): what a ledger books
    before training starts."""
    config = DPConfig(epsilon=epsilon, delta=delta, max_grad_norm=profile.clip_norm)
    return plan_dp_sgd(config, records=records, batch_size=records, epochs=profile.steps)


def compute_task_vector(
    texts: Sequence[str],
    profile: TaskVectorProfile,
    *,
    plan: DPPlan | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TaskVector:
    """The task vector of `texts` under `profile`: exact without a plan, else under the plan's
    DP-SGD (already booked by the caller). Deterministic when exact."""
    if not texts:
        raise InvalidArgument("a task vector needs at least one text")
    records = len(texts)
    if plan is None:
        plan = _clipping_only(profile, records)
    elif (plan.records, plan.steps, plan.sample_rate, plan.config.max_grad_norm) != (
        records,
        profile.steps,
        1.0,
        profile.clip_norm,
    ):
        raise InvalidArgument("the DP-SGD plan was made for other texts or another task-vector profile")
    folder = resolve_base_model(profile.base_model)
    if base_weights_sha256(profile.base_model, folder) != profile.base_sha256:
        raise FailedPrecondition(
            f"base model {profile.base_model!r} here is not the one the task-vector profile pins"
        )
    started = time.perf_counter()
    tm = _adapted(profile, folder)
    bs = [b for _, b in _b_matrices(tm)]
    if sum(b.numel() for b in bs) != profile.dim:
        raise FailedPrecondition(f"the base model's adapter has not the profile's {profile.dim} coordinates")
    optimiser = torch.optim.SGD(bs, lr=profile.learning_rate)
    private = PrivateTraining(tm.model, optimiser, plan)
    try:
        for step in range(profile.steps):
            for batch in private.batches():  # q = 1: one batch, every record
                private.optimiser.zero_grad()
                private.backward(tm.text_loss([texts[i] for i in batch]))
                private.optimiser.step()
            if progress is not None:
                progress(step + 1, profile.steps)
    finally:
        private.close()
    values = torch.cat([b.detach().flatten() for b in bs]).numpy().astype(np.float32)
    sigma = (
        profile.learning_rate * plan.noise_multiplier * profile.clip_norm * math.sqrt(profile.steps) / records
    )
    return TaskVector(values=values, sigma=sigma, records=records, seconds=time.perf_counter() - started)


def release_task_vector(
    texts: Sequence[str],
    profile: TaskVectorProfile,
    *,
    ledger: Ledger,
    dataset: DataSet | str,
    epsilon: float,
    delta: float,
    destination: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Spec, Debit]:
    """A consumer's DP task vector of `texts`, booked to `dataset` in `ledger` before the first
    step (a refused budget trains nothing), as a spec the market's task-vector profile ranks;
    with what the ledger holds for it."""
    plan = plan_task_vector(profile, records=len(texts), epsilon=epsilon, delta=delta)
    debit = ledger.record(dataset, plan.release(), kind="spec", unit="record", destination=destination)
    vector = compute_task_vector(texts, profile, plan=plan, progress=progress)
    # Sent normalised by the size bucket b, not by n: eta / b * (the noisy sum), whose sigma
    # eta z C sqrt(T) / b reveals b only, as a kernel mean's does. Rescaling by n / b is a
    # function of the DP output and of n (public under replace-one); cosine ranking ignores it.
    bucket = size_bucket(len(texts))
    scale = len(texts) / bucket
    privacy = Privacy(epsilon=plan.epsilon, delta=delta, sigma=vector.sigma * scale, size_bucket=bucket)
    values = (vector.values.astype(np.float64) * scale).astype(np.float32)
    spec = Spec(profile_id=profile.profile_id, values=values, privacy=privacy, version=profile.version)
    return spec, debit


def record_gradients(
    texts: Sequence[str], profile: TaskVectorProfile, *, batch_size: int = 32
) -> npt.NDArray[np.float32]:
    """Each text's own loss gradient with respect to B at B = 0, unclipped, in the vector's
    layout: an (n, dim) matrix, from Opacus' per-sample gradients.

    A one-step vector is -eta * mean_i clipped(g_i, C) (+ its noise), so these rows give the
    vector of any subset of the texts, at any clip norm (what `lmdock-lab` evaluates; a test
    holds it equal to `compute_task_vector`)."""
    folder = resolve_base_model(profile.base_model)
    tm = _adapted(profile, folder)
    bs = [b for _, b in _b_matrices(tm)]
    private = PrivateTraining(tm.model, torch.optim.SGD(bs, lr=0.0), _clipping_only(profile, len(texts)))
    rows = []
    try:
        for start in range(0, len(texts), batch_size):
            private.optimiser.zero_grad()
            private.backward(tm.text_loss(list(texts[start : start + batch_size])))
            rows.append(torch.cat([b.grad_sample.flatten(1) for b in bs], dim=1).detach())  # type: ignore[attr-defined]
    finally:
        private.close()
    return torch.cat(rows).numpy().astype(np.float32)


def one_step_vector(
    gradients: npt.NDArray[np.float32], profile: TaskVectorProfile
) -> npt.NDArray[np.float32]:
    """The exact one-step task vector of the records whose `record_gradients` these are:
    -eta * mean_i clip(g_i, C)."""
    if profile.steps != 1:
        raise InvalidArgument("only a one-step task vector is a mean of its records' gradients")
    mean = clipped(gradients, profile.clip_norm).mean(axis=0)
    out: npt.NDArray[np.float32] = (-profile.learning_rate * mean).astype(np.float32)
    return out


def clipped(gradients: npt.NDArray[np.float32], clip_norm: float) -> npt.NDArray[np.float64]:
    """Rows scaled as Opacus' flat clipping scales them: by min(1, C / (||g_i|| + 1e-6))."""
    g = gradients.astype(np.float64)
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    scaled: npt.NDArray[np.float64] = g * np.minimum(1.0, clip_norm / (norms + 1e-6))
    return scaled


def _clipping_only(profile: TaskVectorProfile, records: int) -> DPPlan:
    """Opacus' per-record clipping without noise: an exact vector is made like a private one."""
    config = DPConfig(epsilon=MAX_EPSILON, delta=max_delta(records), max_grad_norm=profile.clip_norm)
    plan = plan_dp_sgd(config, records=records, batch_size=records, epochs=profile.steps)
    return replace(plan, noise_multiplier=0.0, epsilon=math.inf)


def _adapted(profile: TaskVectorProfile, folder: object) -> TaskModel:
    """The base with the profile's adapter: A from the profile and frozen, B zero and trainable."""
    tm = load_task_model(
        folder,  # type: ignore[arg-type]
        GENERATION,
        base_model=profile.base_model,
        max_tokens=profile.max_tokens,
        rank=profile.rank,
        alpha=profile.rank,
        dropout=0.0,
        target_modules=profile.targets,
        layers=profile.layers,
    )
    for name, module in tm.model.named_modules():
        a = getattr(module, "lora_A", None)
        if a is None:
            continue
        weight = a["default"].weight
        with torch.no_grad():
            weight.copy_(torch.from_numpy(lora_a(profile, _short(name), profile.rank, weight.shape[1])))
        weight.requires_grad_(False)
        module.lora_B["default"].weight.data.zero_()
    tm.model.train()
    return tm


def _b_matrices(tm: TaskModel) -> list[tuple[str, torch.Tensor]]:
    """The adapter's B matrices by module name, in a fixed order (the vector's layout)."""
    found = [
        (_short(name), module.lora_B["default"].weight)
        for name, module in tm.model.named_modules()
        if getattr(module, "lora_B", None) is not None
    ]
    if not found:
        raise FailedPrecondition("the task-vector profile's targets match no module of the base model")
    return sorted(found, key=lambda item: _layer_order(item[0]))


def _short(name: str) -> str:
    """A module's name without PEFT's wrapper prefix (base_model.model.)."""
    return name.removeprefix("base_model.model.")


def _layer_order(name: str) -> tuple[int, str]:
    numbers = [int(p) for p in name.split(".") if p.isdigit()]
    return (numbers[0] if numbers else -1, name)
