"""DP-SGD's randomness from a ChaCha20 keystream (`chacha`): Opacus' noise, and Poisson sampling.

Opacus draws DP-SGD noise with `torch.normal` from a `torch.Generator`; its `secure_mode` needs
torchcsprng, which has no build for current torch. The public hook is
`DPOptimizer.add_noise()` (clipped sum in `p.summed_grad` -> noised gradient in `p.grad`, called
once per step by `pre_step` before the accountant's step hook). `ChaChaDPOptimizer` overrides it:
Opacus' own `add_noise` runs with a zero noise multiplier (its `_generate_noise` returns exact
zeros for std 0), so its checks and bookkeeping stay Opacus', and the noise
N(0, (z C)^2) comes from ChaCha20 instead. The multiplier is restored before the accountant reads
it. Checked against the installed Opacus (`SUPPORTED_OPACUS`), since `add_noise`'s contract is
what the override relies on.

`ChaChaPoissonSampler` draws the batches from the same keystream: each record enters each step's
batch independently when its uniform u < q (on the 2^-53 grid, P = ceil(q 2^53) / 2^53, within
2^-53 of q), so which records a step used is as unpredictable as the noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import opacus
import torch
from lmdock.client.training.chacha import ChaChaGaussian
from opacus.optimizers import DPOptimizer
from torch.utils.data import Sampler

__all__ = ["SUPPORTED_OPACUS", "ChaChaDPOptimizer", "ChaChaPoissonSampler", "check_opacus_version"]

#: Opacus releases whose DPOptimizer.add_noise this override was checked against.
SUPPORTED_OPACUS = ("1.6.",)


def check_opacus_version(version: str = opacus.__version__) -> None:
    if not version.startswith(SUPPORTED_OPACUS):
        raise RuntimeError(
            f"Opacus {version} is not one lmdock's DP-SGD noise hook was checked against "
            f"({', '.join(v + 'x' for v in SUPPORTED_OPACUS)}): install a supported Opacus"
        )


class ChaChaDPOptimizer(DPOptimizer):
    """A flat-clipping DPOptimizer whose noise is ChaCha20 Gaussians (see the module docstring)."""

    noise_multiplier: float  # set by DPOptimizer.__init__ (Opacus is untyped)

    def __init__(self, optimizer: torch.optim.Optimizer, *, source: ChaChaGaussian, **kwargs: Any) -> None:
        check_opacus_version()
        super().__init__(optimizer, **kwargs)
        self.source = source

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        multiplier, self.noise_multiplier = self.noise_multiplier, 0.0
        try:
            super().add_noise()  # p.grad = p.summed_grad, with Opacus' processed-flag checks
        finally:
            self.noise_multiplier = multiplier
        for p in self.params:
            grad = p.grad
            assert grad is not None  # set by add_noise above
            noise = torch.from_numpy(self.source.normal(grad.numel())).reshape(grad.shape).to(grad.device)
            grad.copy_(grad.double() + std * noise)  # in float64, rounded to the gradient's dtype once


class ChaChaPoissonSampler(Sampler[list[int]]):
    """A batch sampler: one epoch of `steps` Poisson batches of record indices (some empty)."""

    def __init__(self, records: int, *, sample_rate: float, steps: int, source: ChaChaGaussian) -> None:
        self.records, self.sample_rate, self.steps, self.source = records, sample_rate, steps, source

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield np.flatnonzero(self.source.uniforms(self.records) < self.sample_rate).tolist()
