"""DP-SGD's randomness: N(0, 1) from a ChaCha20 keystream (law, known keystream), Poisson
batches from the same stream, and the training loop's noise comes from it, at the calibrated
scale, fresh on every run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lmdock.client.training.chacha import ChaChaGaussian
from lmdock.client.training.dp_sgd import DPConfig, PrivateTraining, plan_dp_sgd
from lmdock.client.training.opacus_noise import (
    ChaChaDPOptimizer,
    ChaChaPoissonSampler,
    check_opacus_version,
)
from scipy.stats import kstest

N = 100_000


def test_uniforms_are_the_chacha20_keystream() -> None:
    # RFC 8439 §2.3.2's all-zero key, nonce and counter: the block starts 76 b8 e0 ad a0 f1 3d 90
    (u,) = ChaChaGaussian(bytes(32)).uniforms(1)
    assert u == (0x903DF1A0ADE0B876 >> 11) * 2.0**-53
    a, b = ChaChaGaussian(), ChaChaGaussian()  # fresh OS keys: different streams
    assert not np.array_equal(a.uniforms(4), b.uniforms(4))
    with pytest.raises(ValueError, match="32 bytes"):
        ChaChaGaussian(bytes(16))


def test_normal_draws_are_standard_normal() -> None:
    z = ChaChaGaussian(b"lmdock test key, fixed for law.."[:32]).normal(N)  # fixed key: deterministic test
    assert z.shape == (N,) and np.isfinite(z).all()
    assert abs(z.mean()) < 4 / math.sqrt(N)
    assert abs(z.var() - 1) < 4 * math.sqrt(2 / N)
    assert kstest(z, "norm").pvalue > 0.01
    # the two halves of Box–Muller are uncorrelated
    half = N // 2
    assert abs(np.corrcoef(z[:half], z[half:])[0, 1]) < 4 / math.sqrt(half)


def test_poisson_batches_include_each_record_with_probability_q() -> None:
    steps, records, q = 4000, 100, 0.1
    source = ChaChaGaussian(bytes(range(32)))  # fixed key: deterministic test
    batches = list(ChaChaPoissonSampler(records, sample_rate=q, steps=steps, source=source))
    assert len(batches) == steps
    hits = np.zeros(records)
    for batch in batches:
        assert batch == sorted(set(batch)) and all(0 <= i < records for i in batch)
        hits[batch] += 1
    rate = hits / steps  # each ~ Binomial(4000, 0.1) / 4000: sd 0.0047
    assert abs(rate.mean() - q) < 4 * math.sqrt(q * (1 - q) / (steps * records))
    assert np.abs(rate - q).max() < 5 * math.sqrt(q * (1 - q) / steps)


def test_only_a_checked_opacus_is_accepted() -> None:
    check_opacus_version("1.6.0")
    for other in ("1.5.4", "2.0.0"):
        with pytest.raises(RuntimeError, match="not one lmdock's DP-SGD noise hook"):
            check_opacus_version(other)


def _noise_step(seed: int) -> tuple[torch.Tensor, PrivateTraining]:
    """One DP-SGD step on an empty batch: the gradient is the noise alone, z C / B per coordinate."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(100, 50)
    plan = plan_dp_sgd(DPConfig(epsilon=2.0, delta=1e-6), records=1000, batch_size=100, epochs=1)
    private = PrivateTraining(model, torch.optim.SGD(model.parameters(), lr=0.1), plan)
    try:
        private.optimiser.zero_grad()
        private.noise_only_step()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return grads.clone(), private
    finally:
        private.close()


def test_training_noise_comes_from_chacha_at_the_planned_scale() -> None:
    grads, private = _noise_step(seed=0)
    assert isinstance(private.optimiser, ChaChaDPOptimizer)
    assert private.optimiser.source.draws == grads.numel() == 5050
    plan = private.plan
    expected = plan.noise_multiplier * plan.config.max_grad_norm / private.optimiser.expected_batch_size
    assert float(grads.std()) == pytest.approx(expected, rel=0.1)
    assert private.optimiser.noise_multiplier == plan.noise_multiplier  # restored for the accountant
    assert [(z, q, n) for z, q, n in private.engine.accountant.history] == [
        (plan.noise_multiplier, plan.sample_rate, 1)
    ]
    again, _ = _noise_step(seed=0)  # the same torch seed, yet fresh noise
    assert not torch.equal(grads, again)
    # the loader is the ChaCha20 Poisson sampler: one batch per planned step
    assert isinstance(private.loader.batch_sampler, ChaChaPoissonSampler)
    assert private.loader.batch_sampler.source is private.optimiser.source
