"""From task texts to a released spec: embed -> feature map -> DP kernel mean, booked once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from lmdock.client.embedding_checkpoint import embed_resumably
from lmdock.client.ledger import DataSet, Debit, Ledger, LedgerState
from lmdock.client.progress import Progress
from lmdock.common.accounting import check_delta
from lmdock.common.errors import InvalidArgument
from lmdock.common.features import build_feature_map
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import ReleasePlan, Spec, SpecRelease, exact_spec, person_means, plan_release

if TYPE_CHECKING:  # torch and transformers load at the first embedding, not before a refusal
    from lmdock.client.embedder import Embedder

__all__ = ["SpecBooking", "features_of", "private_spec", "public_spec"]


def features_of(
    texts: Sequence[str],
    profile: SpecProfile,
    *,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    checkpoint: Path | None = None,
) -> npt.NDArray[np.float64]:
    """phi(embed(text)) for each text, under `profile` (rows have norm <= clip radius); with a
    `checkpoint`, embedding resumes from the rows an earlier, stopped call saved there."""
    feature_map = build_feature_map(profile)  # refuses an unreproducible profile first
    if embedder is None:
        from lmdock.client.embedder import Embedder

        embedder = Embedder(profile)
    if checkpoint is not None:
        return feature_map(embed_resumably(embedder, texts, checkpoint, progress=progress))
    return feature_map(embedder.embed(texts, progress=progress))


def _plan(
    texts: Sequence[str], profile: SpecProfile, *, epsilon: float, delta: float, persons: Sequence[str]
) -> ReleasePlan:
    """The release of `texts`: one unit per text, or per person when `persons` names them."""
    if persons and len(persons) != len(texts):
        raise InvalidArgument(f"{len(persons)} person ids for {len(texts)} texts")
    if persons:
        return plan_release(profile, epsilon=epsilon, delta=delta, units=len(set(persons)), unit="person")
    return plan_release(profile, epsilon=epsilon, delta=delta, units=len(texts))


def _release(
    plan: ReleasePlan,
    texts: Sequence[str],
    persons: Sequence[str],
    embedder: Embedder | None,
    progress: Progress | None,
    checkpoint: Path | None = None,
) -> SpecRelease:
    features = features_of(texts, plan.profile, embedder=embedder, progress=progress, checkpoint=checkpoint)
    return plan.release(person_means(features, persons) if persons else features)


def private_spec(
    texts: Sequence[str],
    profile: SpecProfile,
    *,
    epsilon: float,
    delta: float,
    persons: Sequence[str] = (),
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> SpecRelease:
    """An (epsilon, delta)-DP spec of `texts`, with what it cost (for the caller to account).

    The privacy unit is one text, or, when `persons` names the person behind each text, one
    person: each person's features are averaged into one row before the release, so the noise
    is calibrated to the number of persons and covers everything a person contributed.
    """
    plan = _plan(texts, profile, epsilon=epsilon, delta=delta, persons=persons)
    return _release(plan, texts, persons, embedder, progress)


@dataclass(frozen=True)
class SpecBooking:
    """A private spec of one data set against one read of the ledger: refused early over the
    budget, re-sent for free when released before, else released and booked write-ahead."""

    ledger: Ledger
    state: LedgerState
    texts: Sequence[str]
    dataset: DataSet
    epsilon: float
    delta: float
    persons: Sequence[str]

    @classmethod
    def open(
        cls,
        ledger: Ledger,
        texts: Sequence[str],
        *,
        epsilon: float,
        delta: float,
        persons: Sequence[str] = (),
        dataset: str | None = None,
    ) -> SpecBooking:
        """Read the ledger once; refuse a delta over the policy (`max_delta`) and a release no
        profile could fit in the budget (BudgetExceeded), both before the market is contacted.
        `dataset` names the data set (None: the registered one holding these records, if any)."""
        check_delta(delta, n=len(set(persons)) if persons else len(texts), what="a spec")
        data = DataSet.of(texts, name=dataset)
        booking = cls(ledger, ledger.state(), texts, data, epsilon, delta, tuple(persons))
        booking.state.check_spec_budget(data, epsilon=epsilon, delta=delta, unit=booking.unit)
        return booking

    @property
    def unit(self) -> str:
        return "person" if self.persons else "record"

    def spec(
        self,
        profile: SpecProfile,
        *,
        destination: str,
        embedder: Embedder | None = None,
        progress: Progress | None = None,
        checkpoint: Path | None = None,
    ) -> tuple[Spec, Debit]:
        """(spec, debit): the spec already released for these texts, parameters and profile
        (free: re-sending published output is post-processing), else a new release, checked at
        its exact cost before anything is embedded and booked durably before it is returned
        (BudgetExceeded, and no spec, over the cap). `checkpoint`: see `features_of`."""
        cached = self.state.cached_release(
            self.dataset.key,
            profile_ids=profile.ids,
            epsilon=self.epsilon,
            delta=self.delta,
            unit=self.unit,
        )
        if cached is not None and (spec := cached.spec()) is not None:
            return spec, self.state.resent(cached)
        plan = _plan(self.texts, profile, epsilon=self.epsilon, delta=self.delta, persons=self.persons)
        self.state.check(self.dataset, plan.cost)
        released = _release(plan, self.texts, self.persons, embedder, progress, checkpoint)
        return released.spec, self.ledger.book(self.dataset, released, destination=destination)


def public_spec(texts: Sequence[str], profile: SpecProfile, *, embedder: Embedder | None = None) -> Spec:
    """The exact spec of public data (a publisher's choice; carries no privacy guarantee)."""
    return exact_spec(features_of(texts, profile, embedder=embedder), profile)
