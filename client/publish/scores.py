"""A DP build's held-out scores, released as noised counts.

A score is a count over the m held-out records divided by m: correct predictions of the adapter,
of the base model alone, and (classification) the size of the largest label class
(`majority_accuracy`). Replacing one held-out record moves each count by at most 1, so the k
counts have replace-one L2 sensitivity sqrt(k) (each record is predicted on its own; a
generation is cut at the public `max_tokens`, not at a length read from the gold answers).
They are released with the spec's Gaussian mechanism on a public grid
(`common.mechanism.calibrate_vector` + `add_noise`: discrete Gaussian noise from the OS CSPRNG)
and divided by m. The noised score is unbiased and is not clipped to
[0, 1] (clipping would bias it); with few held-out records it is imprecise, and says so.

Composition (docs/privacy.md §6). The split is drawn independently of the data (a shuffle of
the record positions seeded by the public `seed`; only n enters it), and the held-out records
are disjoint from the training records. A replaced training record changes the adapter (DP-SGD,
(eps_sgd, delta_sgd)) and the counts only through it (post-processing); a replaced held-out
record changes only the counts ((eps_scores, delta_scores)). So the build as a whole is
(max(eps_sgd, eps_scores), max(delta_sgd, delta_scores))-DP per record (parallel composition),
which the manifest's `training.epsilon` / `delta` state. The privacy ledger, which composes every
release of a data file, books the two as separate releases (an upper bound on the parallel cost).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lmdock.common.accounting import Release
from lmdock.common.errors import InvalidArgument
from lmdock.common.mechanism import Calibration, add_noise, calibrate_vector
from lmdock.common.noise import UniformSource, os_uniform

__all__ = ["SCORE_NAMES", "ScorePlan", "plan_scores"]

#: The counts a build releases, per task kind (each divided by the held-out size).
SCORE_NAMES = {
    "classification": ("accuracy", "base_zero_shot_accuracy", "majority_accuracy"),
    "generation": ("exact_match", "base_exact_match"),
}


@dataclass(frozen=True)
class ScorePlan:
    """The noise of a DP build's scores, fixed from public parameters before training."""

    names: tuple[str, ...]
    held_out: int
    calibration: Calibration

    @property
    def cost(self) -> Release:
        return self.calibration.cost

    def release(self, counts: Mapping[str, int], *, uniform: UniformSource = os_uniform) -> dict[str, float]:
        """Each count + N_Z noise, divided by the held-out size."""
        if set(counts) != set(self.names) or any(not 0 <= c <= self.held_out for c in counts.values()):
            raise ValueError(f"need one count in [0, {self.held_out}] for each of {self.names}")
        noised = add_noise([float(counts[name]) for name in self.names], self.calibration, uniform=uniform)
        return {name: float(v) / self.held_out for name, v in zip(self.names, noised, strict=True)}

    def to_manifest(self) -> dict[str, Any]:
        """What the manifest's `training.eval_scores` says about how the scores were released."""
        cal = self.calibration
        return {
            "dp": True,
            "epsilon": cal.epsilon,
            "delta": cal.delta,
            "mechanism": "gaussian on counts (discrete, OS CSPRNG)",
            "sigma": cal.sigma / self.held_out,  # of each score
            "held_out_records": self.held_out,
            "neighbouring": "replace-one",
            "composition": "parallel with DP-SGD: held-out records are disjoint from training records",
        }


def plan_scores(task_kind: str, *, held_out: int, epsilon: float, delta: float) -> ScorePlan:
    """The (epsilon, delta)-DP release of the scores of a `task_kind` build with `held_out` records."""
    if held_out < 1:
        raise InvalidArgument("a DP build's scores need held-out records (--eval-fraction > 0)")
    names = SCORE_NAMES[task_kind]
    calibration = calibrate_vector(
        epsilon=epsilon, delta=delta, sensitivity=math.sqrt(len(names)), dim=len(names)
    )
    return ScorePlan(names=names, held_out=held_out, calibration=calibration)
