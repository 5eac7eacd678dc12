"""The task-vector spec (issue 22): its profile, its recipe on a real (tiny) causal LM, DP-SGD
booked before the first step, and cosine ranking that finds a task's own learnware."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from lmdock.client.ledger import Ledger
from lmdock.client.privacy_unit import DataSet
from lmdock.client.training.task_vector import (
    clipped,
    compute_task_vector,
    one_step_vector,
    plan_task_vector,
    record_gradients,
    release_task_vector,
    task_vector_profile,
)
from lmdock.common.accounting import Budget
from lmdock.common.errors import BudgetExceeded, InvalidArgument
from lmdock.common.ranking import comparable
from lmdock.common.spec import Privacy, Spec
from lmdock.common.task_vector import TaskVectorProfile, lora_a
from lmdock.common.task_vector_search import TaskVectorIndexing
from lmdock.server.index.exact import ExactIndex

from tests.helpers import listed

TOPICS = {
    "clinic": "the patient reports {} days of fever, cough and pain in the chest; blood pressure is {}",
    "markets": "shares of the bank rose {} percent after earnings; the bond yield fell to {}",
    "arithmetic": "if a box holds {} apples and we add {} more, how many apples are in the box",
}


def texts(topic: str, n: int, offset: int = 0) -> list[str]:
    return [TOPICS[topic].format(i + offset, 3 * i + offset + 7) for i in range(n)]


@pytest.fixture(scope="module")
def profile(tiny_llama: Path) -> TaskVectorProfile:
    return task_vector_profile(
        str(tiny_llama), layers=1, rank=2, max_tokens=24, steps=2, learning_rate=1.0, clip_norm=0.5
    )


def test_the_profile_is_its_public_parameters_and_its_id_their_jcs_hash(profile: TaskVectorProfile) -> None:
    # tiny Llama: hidden 32, 2 heads of 16 (q, k, v each 32 wide); top 1 layer, rank 2
    assert profile.dim == 1 * 2 * (32 + 32 + 32)
    assert TaskVectorProfile.from_dict({**profile.to_dict(), "profile_id": profile.profile_id}) == profile
    assert dataclasses.replace(profile, seed=1).profile_id != profile.profile_id
    with pytest.raises(InvalidArgument, match="profile_id does not match"):
        TaskVectorProfile.from_dict({**profile.to_dict(), "profile_id": "0" * 16})
    with pytest.raises(InvalidArgument, match="unknown task-vector profile fields"):
        TaskVectorProfile.from_dict({**profile.to_dict(), "secret": 1})
    with pytest.raises(InvalidArgument, match="clip_norm must be positive"):
        dataclasses.replace(profile, clip_norm=math.nan)


def test_the_frozen_a_matrices_come_from_the_profile_alone(profile: TaskVectorProfile) -> None:
    a = lora_a(profile, "model.layers.1.self_attn.q_proj", 2, 32)
    assert a.shape == (2, 32) and np.abs(a).max() <= 1 / math.sqrt(32)
    assert np.array_equal(a, lora_a(profile, "model.layers.1.self_attn.q_proj", 2, 32))
    assert not np.array_equal(a, lora_a(profile, "model.layers.1.self_attn.k_proj", 2, 32))
    # the first entry from the stated rule: SHAKE-256 of "lmdock task-vector A\0<seed>\0<module>",
    # its first 4 bytes little-endian / 2^32 = u, A = (2u - 1) / sqrt(in)
    first = hashlib.shake_256(b"lmdock task-vector A\x000\x00model.layers.1.self_attn.q_proj").digest(4)
    u = int.from_bytes(first, "little") / 2**32
    assert float(a[0, 0]) == pytest.approx((2 * u - 1) / math.sqrt(32), rel=1e-6)


def test_an_exact_task_vector_is_deterministic_given_the_profile(profile: TaskVectorProfile) -> None:
    one = compute_task_vector(texts("clinic", 12), profile)
    again = compute_task_vector(texts("clinic", 12), profile)
    assert one.values.shape == (profile.dim,) and one.sigma == 0.0
    assert np.array_equal(one.values, again.values) and np.linalg.norm(one.values) > 0
    other = compute_task_vector(texts("markets", 12), profile)
    assert not np.allclose(one.values, other.values)


def test_cosine_search_ranks_a_tasks_own_learnware_first(profile: TaskVectorProfile) -> None:
    """Each topic's learnware vector from its texts; a user's fresh texts of that topic (other
    numbers) find it first among the three, through the market's exact index under cosine."""
    index = ExactIndex()
    for topic in TOPICS:
        vector = compute_task_vector(texts(topic, 16), profile).values
        values, sigma = comparable(TaskVectorIndexing(profile), vector, 0.0)
        exact = Spec(
            profile.profile_id, values, Privacy(epsilon=None, delta=0.0, sigma=sigma, size_bucket=16)
        )
        index.add(listed(topic, exact))
    for topic in TOPICS:
        user = compute_task_vector(texts(topic, 10, offset=100), profile).values
        query = Spec(profile.profile_id, user, Privacy(epsilon=None, delta=0.0, sigma=0.0, size_bucket=10))
        assert index.search(query, top_k=3).matches[0].learnware_id == topic


def test_a_dp_task_vector_is_booked_before_its_first_step(tmp_path: Path, profile: TaskVectorProfile) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl", budget=Budget(epsilon=3.0, delta=1e-6))
    records = texts("clinic", 21)  # size bucket 20: what the spec discloses
    dataset = DataSet.of(records, name="clinic-notes")
    seen: list[int] = []

    def at_step(step: int, total: int) -> None:
        seen.append(len(ledger.state().releases))  # the debit is on disk while training runs

    spec, debit = release_task_vector(
        records, profile, ledger=ledger, dataset=dataset, epsilon=1.0, delta=1e-6, progress=at_step
    )
    assert seen == [1, 1]
    plan = plan_task_vector(profile, records=21, epsilon=1.0, delta=1e-6)
    assert spec.privacy.epsilon == plan.epsilon and 0.999 <= plan.epsilon <= 1.0
    assert spec.profile_id == profile.profile_id and plan.sample_rate == 1.0 and plan.steps == 2
    # sd of the noise SGD accumulates, normalised by the size bucket b = 20, not n = 21:
    # eta z C sqrt(T) / b, so neither sigma nor the size field tells n
    expected = profile.learning_rate * plan.noise_multiplier * profile.clip_norm * math.sqrt(2) / 20
    assert spec.privacy.size_bucket == 20 and spec.privacy.sigma == pytest.approx(expected)
    assert ledger.state().spent("clinic-notes").epsilon == pytest.approx(plan.epsilon, abs=1e-6)
    assert debit.dataset == "clinic-notes" and debit.spent == ledger.state().spent("clinic-notes")


def test_a_task_vector_over_budget_trains_nothing(tmp_path: Path, profile: TaskVectorProfile) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl", budget=Budget(epsilon=0.5, delta=1e-6))
    records = texts("markets", 20)

    def never(step: int, total: int) -> None:
        raise AssertionError("trained over budget")

    with pytest.raises(BudgetExceeded):
        release_task_vector(
            records,
            profile,
            ledger=ledger,
            dataset=DataSet.of(records, name="desk"),
            epsilon=1.0,
            delta=1e-6,
            progress=never,
        )
    assert ledger.state().releases == ()


def test_a_one_step_vector_is_the_mean_of_its_records_clipped_gradients(tiny_llama: Path) -> None:
    """What the lab's evaluation rests on: with one step, the released vector is
    -eta * mean_i clip(g_i), so per-record gradients give the vector of any subset."""
    one_step = task_vector_profile(str(tiny_llama), layers=1, rank=2, max_tokens=24, steps=1, clip_norm=0.05)
    records = texts("arithmetic", 10) + texts("clinic", 6)
    gradients = record_gradients(records, one_step, batch_size=5)
    assert gradients.shape == (16, one_step.dim)
    assert np.linalg.norm(gradients, axis=1).min() > 0.05  # so the clipping matters here
    expected = -one_step.learning_rate * clipped(gradients, 0.05).mean(axis=0)
    np.testing.assert_allclose(one_step_vector(gradients, one_step), expected, rtol=1e-6)
    got = compute_task_vector(records, one_step).values
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_a_dp_one_step_vector_is_the_exact_one_plus_gaussian_noise_of_the_stated_sd(
    tiny_llama: Path, tmp_path: Path
) -> None:
    """Statistically: the DP vector minus the exact one is N(0, sigma^2) per coordinate, sigma =
    eta z C / n (a chi-square bound on the variance over the coordinates, and a mean near 0)."""
    one_step = task_vector_profile(str(tiny_llama), layers=1, rank=8, max_tokens=24, steps=1, clip_norm=0.05)
    records = texts("markets", 12)
    exact = compute_task_vector(records, one_step).values.astype(np.float64)
    plan = plan_task_vector(one_step, records=12, epsilon=2.0, delta=1e-6)
    private = compute_task_vector(records, one_step, plan=plan)
    noise = (private.values - exact) / private.sigma
    d = noise.size  # 8 * 96 coordinates
    assert private.sigma == pytest.approx(one_step.learning_rate * plan.noise_multiplier * 0.05 / 12)
    assert abs(noise.mean()) < 5 / math.sqrt(d)
    assert abs(noise.var() - 1.0) < 5 * math.sqrt(2 / d)
