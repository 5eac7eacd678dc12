"""DP-SGD with Opacus: Poisson sampling, per-example clipping, Gaussian noise, replace-one accounting.

Each step samples every training record independently with probability q = 1 / steps_per_epoch
(Poisson sampling, which the accountant's subsampling amplification assumes), clips each
record's gradient g_i to norm C, and releases (Σ_i clip(g_i) + N(0, z²C²I)) / (qn).

The privacy unit is one training record and the relation lmdock's ledger uses, replace-one
(docs/privacy.md): `plan_dp_sgd` picks the smallest noise multiplier z at which the whole run
(`epochs` epochs of 1/q steps) is (ε, δ)-DP for replace-one neighbours, by dp_accounting's
PLD accountant (`lmdock.common.accounting.dp_sgd_noise_multiplier`). The plan is known
before training starts, so the ledger can debit it write-ahead. Opacus' own PRV accountant,
which covers add/remove neighbours, is kept for reference (`epsilon_add_remove`).

Only trainable layers (LoRA matrices, task heads) get Opacus' per-sample hooks, attached
without wrapping the peft model. The noise is drawn from a ChaCha20 keystream under a fresh key
from the OS CSPRNG (`opacus_noise.ChaChaDPOptimizer`; Opacus' `secure_mode` would need
torchcsprng, which has no build for current torch), and so is Poisson sampling
(`opacus_noise.ChaChaPoissonSampler`): never torch's global RNG or a seeded generator.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from lmdock.common.accounting import Release, check_delta, composed_epsilon, dp_sgd_noise_multiplier
from lmdock.common.errors import InvalidArgument
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DPConfig", "DPPlan", "DPReport", "PrivateTraining", "plan_dp_sgd"]

#: Beyond this the guarantee is void in practice, and the noise search stops converging.
MAX_EPSILON = 100.0


@dataclass(frozen=True, kw_only=True)
class DPConfig:
    epsilon: float
    delta: float
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.epsilon <= MAX_EPSILON:
            raise InvalidArgument(f"--dp-epsilon must be in (0, {MAX_EPSILON:g}], got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise InvalidArgument(f"--dp-delta must be in (0, 1), got {self.delta}")
        if not math.isfinite(self.max_grad_norm) or self.max_grad_norm <= 0:
            raise InvalidArgument(f"the clipping norm must be positive, got {self.max_grad_norm}")

    def check_records(self, records: int) -> None:
        """The one δ policy of every release (`lmdock.common.accounting.max_delta`)."""
        check_delta(self.delta, n=records, what="--dp-delta")


@dataclass(frozen=True)
class DPPlan:
    """A DP-SGD run fixed before it starts: what the ledger debits, and what training follows."""

    config: DPConfig
    records: int
    batch_size: int  # expected (Poisson) batch size
    steps_per_epoch: int
    steps: int
    noise_multiplier: float
    epsilon: float  # replace-one epsilon of the whole run at config.delta (<= config.epsilon)

    @property
    def sample_rate(self) -> float:
        return 1.0 / self.steps_per_epoch

    def part(self, parts: int) -> DPPlan:
        """One of `parts` equal, consecutive parts of this run (a federated site trains one per
        round): the same z and q, steps / parts steps. Run one after another, even adaptively on
        what earlier parts released, they are exactly the steps the whole plan accounts for, so
        the whole plan is what the ledger books (`epsilon` here is the part's alone)."""
        if parts < 1 or self.steps % (parts * self.steps_per_epoch):
            raise InvalidArgument(
                f"a run of {self.steps // self.steps_per_epoch} epochs has no {parts} equal parts"
            )
        part = replace(self, steps=self.steps // parts)
        return replace(
            part, epsilon=min(composed_epsilon([part.release()], delta=self.config.delta), self.epsilon)
        )

    def release(self) -> Release:
        """The run as the privacy ledger books it."""
        return Release(
            epsilon=self.epsilon,
            delta=self.config.delta,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps,
            sensitivity="add-remove",
        )


def plan_dp_sgd(config: DPConfig, *, records: int, batch_size: int, epochs: int) -> DPPlan:
    """q = 1 / ceil(n / batch_size), epochs / q steps, and the smallest z that fits (ε, δ)."""
    config.check_records(records)
    steps_per_epoch = math.ceil(records / batch_size)
    steps = steps_per_epoch * epochs
    z = dp_sgd_noise_multiplier(
        epsilon=config.epsilon, delta=config.delta, sample_rate=1.0 / steps_per_epoch, steps=steps
    )
    plan = DPPlan(config, records, batch_size, steps_per_epoch, steps, z, epsilon=config.epsilon)
    return replace(plan, epsilon=min(composed_epsilon([plan.release()], delta=config.delta), config.epsilon))


@dataclass(frozen=True)
class DPReport:
    """What one DP training run spent, for the manifest, `--json` and the privacy ledger."""

    epsilon: float  # replace-one, dp_accounting PLD, for the steps actually made
    delta: float
    target_epsilon: float
    epsilon_add_remove: float  # Opacus' PRV accountant, add/remove neighbours (for reference)
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "epsilon_add_remove": self.epsilon_add_remove,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "max_grad_norm": self.max_grad_norm,
            "accountant": "pld",
            "neighbouring": "replace-one",
            "sampling": "poisson",
        }


@contextmanager
def _opacus_quiet() -> Iterator[None]:
    """Opacus warns about secure_mode (see the module docstring) and hook internals on every run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="divide by zero", category=RuntimeWarning)  # PRV at q = 1
        yield


def _indices(batch: list[tuple[torch.Tensor]]) -> list[int]:
    return [int(i) for (i,) in batch]


class PrivateTraining:
    """Opacus' PrivacyEngine around a model, its optimiser and a loader of record indices."""

    def __init__(self, model: torch.nn.Module, optimiser: torch.optim.Optimizer, plan: DPPlan) -> None:
        from lmdock.client.training.chacha import ChaChaGaussian
        from lmdock.client.training.opacus_noise import ChaChaDPOptimizer, ChaChaPoissonSampler
        from opacus import PrivacyEngine
        from opacus.optimizers import DPOptimizer

        self.plan = plan
        source = ChaChaGaussian()  # one fresh key per run: the batches and the noise
        # Poisson sampling (q = 1 / ceil(n / batch_size)) of record indices from ChaCha20;
        # make_private keeps this loader as it is, and reads q = 1 / len(loader) from it
        sampler = ChaChaPoissonSampler(
            plan.records, sample_rate=plan.sample_rate, steps=plan.steps_per_epoch, source=source
        )
        poisson = DataLoader(
            TensorDataset(torch.arange(plan.records)), batch_sampler=sampler, collate_fn=_indices
        )
        with _opacus_quiet():
            self.engine = PrivacyEngine(accountant="prv")
            self.hooks, made, self.loader = self.engine.make_private(
                module=model,
                optimizer=optimiser,
                data_loader=poisson,
                noise_multiplier=plan.noise_multiplier,
                max_grad_norm=plan.config.max_grad_norm,
                poisson_sampling=False,
                wrap_model=False,
            )
        if type(made) is not DPOptimizer:
            raise AssertionError(f"Opacus made a {type(made).__name__}, not the flat-clipping DPOptimizer")
        # the same optimiser, with its noise from ChaCha20, and the accountant's hook Opacus attaches
        self.optimiser = ChaChaDPOptimizer(
            optimiser,
            source=source,
            noise_multiplier=made.noise_multiplier,
            max_grad_norm=made.max_grad_norm,
            expected_batch_size=made.expected_batch_size,
            loss_reduction=made.loss_reduction,
        )
        self.optimiser.attach_step_hook(
            self.engine.accountant.get_optimizer_hook_fn(sample_rate=plan.sample_rate)
        )
        self.hooks.forbid_grad_accumulation()
        self._params = [p for p in model.parameters() if p.requires_grad]

    def batches(self) -> Iterator[list[int]]:
        """One epoch of Poisson-sampled batches of record indices (some may be empty)."""
        yield from self.loader

    def backward(self, loss: torch.Tensor) -> None:
        with _opacus_quiet():
            loss.backward()

    def noise_only_step(self) -> None:
        """An empty Poisson batch still releases a noised (zero) gradient, and is accounted."""
        for p in self._params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)  # type: ignore[attr-defined]
        self.optimiser.step()

    def report(self) -> DPReport:
        plan = self.plan
        steps = sum(n for _, _, n in self.engine.accountant.history)
        if steps != plan.steps:
            raise AssertionError(f"DP-SGD made {steps} steps, its plan (and the ledger) {plan.steps}")
        with _opacus_quiet():
            add_remove = float(self.engine.get_epsilon(plan.config.delta))
        return DPReport(
            epsilon=plan.epsilon,
            delta=plan.config.delta,
            target_epsilon=plan.config.epsilon,
            epsilon_add_remove=add_remove,
            noise_multiplier=plan.noise_multiplier,
            sample_rate=plan.sample_rate,
            steps=steps,
            max_grad_norm=plan.config.max_grad_norm,
        )

    def close(self) -> None:
        """Remove Opacus' hooks and per-sample buffers from the model."""
        self.hooks.cleanup()  # removes grad_sample and the other hook attributes
        for p in self._params:
            if hasattr(p, "summed_grad"):
                del p.summed_grad
