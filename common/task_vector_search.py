"""A served task-vector profile as the market checks, indexes and ranks task vectors by it.

The spec checks of a kernel mean carry over (`Spec.check_against`): a task vector is
s = mu + z with z ~ N(0, sigma^2 I_dim), and its un-noised part has a bounded norm,

    ||mu|| = ||eta sum_t mean_i clip(g_i,t)|| <= eta T C = R

(T plain SGD steps at learning rate eta of mean gradients each clipped to C: the profile's
`steps`, `learning_rate`, `clip_norm`; `lmdock.client.training.task_vector`), so the norm
bounds of `lmdock.common.spec.norm_bounds` hold with R as the clip radius.

max_sigma = R: the noise a vector may carry in any one direction is at most the largest signal
it can carry there; under more, its cosine to any learnware's unit vector is mostly noise.
(The search's ranking reads the inner product of the query with each learnware's unit vector,
whose noise has sd sigma whatever the dimension.) The hard ceiling `MAX_SIGMA` keeps
sigma^2 * dim finite.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmdock.common.profile import MAX_SIGMA
from lmdock.common.task_vector import TaskVectorProfile

__all__ = ["TaskVectorIndexing"]


@dataclass(frozen=True)
class TaskVectorIndexing:
    """`profile` as a `lmdock.common.spec.ComparedProfile`."""

    profile: TaskVectorProfile

    @property
    def profile_id(self) -> str:
        return self.profile.profile_id

    @property
    def ids(self) -> tuple[str, ...]:
        return self.profile.ids

    @property
    def version(self) -> int:
        return self.profile.version

    @property
    def kernel(self) -> str:
        return self.profile.kernel

    @property
    def feature_dim(self) -> int:
        return self.profile.dim

    @property
    def clip_radius(self) -> float:
        """R = eta T C: the largest norm of an exact task vector."""
        p = self.profile
        return p.learning_rate * p.steps * p.clip_norm

    @property
    def max_sigma(self) -> float:
        return min(self.clip_radius, MAX_SIGMA)

    @property
    def offset(self) -> tuple[float, ...]:
        return ()
