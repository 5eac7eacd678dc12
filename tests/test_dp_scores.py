"""A DP build's held-out scores: counts released with calibrated Gaussian noise (known value,
law over many releases), and what the manifest says about them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lmdock.client.publish.scores import SCORE_NAMES, plan_scores
from lmdock.common.calibration import analytic_sigma

COUNTS = {"accuracy": 70, "base_zero_shot_accuracy": 50, "majority_accuracy": 60}


def test_the_calibration_is_the_gaussian_mechanism_on_k_counts() -> None:
    plan = plan_scores("classification", held_out=100, epsilon=1.0, delta=1e-5)
    cal = plan.calibration
    # three counts, each moved by <= 1 when one held-out record is replaced: L2 sensitivity sqrt(3)
    assert cal.sensitivity == pytest.approx(math.sqrt(3), rel=1e-5)
    assert cal.sigma == pytest.approx(6.4617, abs=1e-4)  # known value
    exact = analytic_sigma(epsilon=1.0, delta=1e-5, sensitivity=math.sqrt(3))
    assert cal.sigma == pytest.approx(exact, rel=1e-5)
    assert plan.cost.sensitivity == "replace-one" and plan.cost.epsilon == 1.0
    generation = plan_scores("generation", held_out=8, epsilon=1.0, delta=1e-5)
    assert generation.names == SCORE_NAMES["generation"]
    assert generation.calibration.sensitivity == pytest.approx(math.sqrt(2), rel=1e-5)


def test_released_scores_are_unbiased_with_the_calibrated_noise() -> None:
    plan = plan_scores("classification", held_out=100, epsilon=1.0, delta=1e-5)
    runs = 3000
    released = np.array([[plan.release(COUNTS)[name] for name in plan.names] for _ in range(runs)])
    noise = released * 100 - np.array([COUNTS[name] for name in plan.names])  # in counts
    sigma = plan.calibration.sigma
    assert np.abs(noise.mean(axis=0)).max() < 4 * sigma / math.sqrt(runs)
    # 9000 draws: the sample sd is within 3 % of sigma with probability 1 - 1e-8
    assert float(noise.std()) == pytest.approx(sigma, rel=0.03)
    assert plan.to_manifest()["sigma"] == pytest.approx(sigma / 100)


def test_counts_must_match_the_plan() -> None:
    plan = plan_scores("generation", held_out=8, epsilon=1.0, delta=1e-5)
    with pytest.raises(ValueError, match="one count in"):
        plan.release({"exact_match": 9, "base_exact_match": 1})
    with pytest.raises(ValueError, match="one count in"):
        plan.release({"exact_match": 1})
    with pytest.raises(Exception, match="held-out"):
        plan_scores("generation", held_out=0, epsilon=1.0, delta=1e-5)
