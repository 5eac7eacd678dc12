"""DP-SGD for adapter training with Opacus: Poisson sampling, per-example clipping, Gaussian noise.

Each step samples every training record independently with probability q = 1 / steps_per_epoch
(Poisson sampling, which the accountant's subsampling amplification assumes), clips each
record's gradient g_i to norm C, and releases (Σ_i clip(g_i) + N(0, σ²C²I)) / (qn). Opacus
picks the noise multiplier σ so that `epochs` epochs spend the target (ε, δ); its accountant
(PRV by default: the tightest, see docs) reports the ε actually spent after training. The
privacy unit is one training record (add/remove neighbours, as Opacus' accountants assume).

Only LoRA matrices and task heads train; Opacus' hooks sit on those nn.Linear layers alone
(frozen layers, embeddings included, get none), attached without wrapping the peft model.
Sampling and noise come from a dedicated torch.Generator seeded from the OS's CSPRNG, never
torch's global RNG. (Opacus' `secure_mode` would need torchcsprng, which has no build for
current torch.)
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from lmdock.common.errors import InvalidArgument
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["ACCOUNTANTS", "DPConfig", "DPReport", "PrivateTraining"]

ACCOUNTANTS = ("prv", "rdp")
#: Beyond this the guarantee is void in practice, and Opacus' noise search stops converging.
MAX_EPSILON = 100.0


@dataclass(frozen=True, kw_only=True)
class DPConfig:
    epsilon: float
    delta: float
    max_grad_norm: float = 1.0
    accountant: str = "prv"

    def __post_init__(self) -> None:
        if not 0 < self.epsilon <= MAX_EPSILON:
            raise InvalidArgument(f"--dp-epsilon must be in (0, {MAX_EPSILON:g}], got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise InvalidArgument(f"--dp-delta must be in (0, 1), got {self.delta}")
        if not math.isfinite(self.max_grad_norm) or self.max_grad_norm <= 0:
            raise InvalidArgument(f"the clipping norm must be positive, got {self.max_grad_norm}")
        if self.accountant not in ACCOUNTANTS:
            raise InvalidArgument(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")

    def check_records(self, records: int) -> None:
        """δ must be well below 1/n, or releasing one whole record would fit inside the guarantee."""
        if self.delta >= 1 / records:
            raise InvalidArgument(
                f"--dp-delta {self.delta:g} is not below 1/n = {1 / records:.3g} for {records} training "
                "records; choose a smaller delta (e.g. 1/n²)"
            )


@dataclass(frozen=True)
class DPReport:
    """What one DP training run spent, for the manifest, `--json` and the privacy ledger."""

    epsilon: float  # spent, from the accountant after training
    delta: float
    target_epsilon: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    accountant: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant,
            "sampling": "poisson",
        }


@contextmanager
def _opacus_quiet() -> Iterator[None]:
    """Opacus warns about secure_mode (see the module docstring) and hook internals on every run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


class PrivateTraining:
    """Opacus' PrivacyEngine around a model, its optimiser and a loader of record indices."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimiser: torch.optim.Optimizer,
        *,
        records: int,
        batch_size: int,
        config: DPConfig,
        epochs: int,
    ) -> None:
        from opacus import PrivacyEngine
        from opacus.data_loader import DPDataLoader

        self.config = config
        generator = torch.Generator().manual_seed(secrets.randbits(63))
        # Poisson sampling (q = 1 / ceil(n / batch_size)) of record indices with our generator;
        # make_private then keeps this loader as it is
        indices = DataLoader(TensorDataset(torch.arange(records)), batch_size=batch_size)
        poisson = DPDataLoader.from_data_loader(indices, generator=generator)
        with _opacus_quiet():
            self.engine = PrivacyEngine(accountant=config.accountant)
            self.hooks, self.optimiser, self.loader = self.engine.make_private_with_epsilon(
                module=model,
                optimizer=optimiser,
                data_loader=poisson,
                target_epsilon=config.epsilon,
                target_delta=config.delta,
                epochs=epochs,
                max_grad_norm=config.max_grad_norm,
                poisson_sampling=False,
                noise_generator=generator,
                wrap_model=False,
            )
        self.hooks.forbid_grad_accumulation()
        self.sample_rate = 1 / len(poisson)
        self._params = [p for p in model.parameters() if p.requires_grad]

    def batches(self) -> Iterator[list[int]]:
        """One epoch of Poisson-sampled batches of record indices (some may be empty)."""
        for (batch,) in self.loader:
            yield batch.tolist()

    def backward(self, loss: torch.Tensor) -> None:
        with _opacus_quiet():
            loss.backward()

    def noise_only_step(self) -> None:
        """An empty Poisson batch still releases a noised (zero) gradient, and is accounted."""
        for p in self._params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)  # type: ignore[attr-defined]
        self.optimiser.step()

    def report(self) -> DPReport:
        with _opacus_quiet():
            spent = float(self.engine.get_epsilon(self.config.delta))
        steps = sum(n for _, _, n in self.engine.accountant.history)
        return DPReport(
            epsilon=spent,
            delta=self.config.delta,
            target_epsilon=self.config.epsilon,
            noise_multiplier=float(self.optimiser.noise_multiplier),
            sample_rate=self.sample_rate,
            steps=steps,
            max_grad_norm=self.config.max_grad_norm,
            accountant=self.config.accountant,
        )

    def close(self) -> None:
        """Remove Opacus' hooks and per-sample buffers from the model."""
        self.hooks.cleanup()  # removes grad_sample and the other hook attributes
        for p in self._params:
            if hasattr(p, "summed_grad"):
                del p.summed_grad
