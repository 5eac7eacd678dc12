"""From task texts to a released spec: embed -> feature map -> DP kernel mean."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from lmdock.client.embedder import Embedder
from lmdock.client.ledger import Ledger, dataset_id
from lmdock.common.errors import InvalidArgument
from lmdock.common.features import build_feature_map
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import Spec, exact_spec, person_means, release

__all__ = ["debited_spec", "features_of", "private_spec", "public_spec"]

Progress = Callable[[int, int], None]


def features_of(
    texts: Sequence[str],
    profile: SpecProfile,
    *,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> npt.NDArray[np.float64]:
    """phi(embed(text)) for each text, under `profile` (rows have norm <= clip radius)."""
    feature_map = build_feature_map(profile)  # refuses an unreproducible profile first
    embedder = embedder or Embedder(profile)
    return feature_map(embedder.embed(texts, progress=progress))


def private_spec(
    texts: Sequence[str],
    profile: SpecProfile,
    *,
    epsilon: float,
    delta: float,
    persons: Sequence[str] = (),
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> Spec:
    """An (epsilon, delta)-DP spec of `texts`.

    The privacy unit is one text, or, when `persons` names the person behind each text, one
    person: each person's features are averaged into one row before the release, so the noise
    is calibrated to the number of persons and covers everything a person contributed.
    """
    if persons and len(persons) != len(texts):
        raise InvalidArgument(f"{len(persons)} person ids for {len(texts)} texts")
    features = features_of(texts, profile, embedder=embedder, progress=progress)
    if persons:
        return release(person_means(features, persons), profile, epsilon=epsilon, delta=delta, unit="person")
    return release(features, profile, epsilon=epsilon, delta=delta)


def debited_spec(
    texts: Sequence[str],
    profile: SpecProfile,
    *,
    epsilon: float,
    delta: float,
    ledger: Ledger,
    destination: str,
    persons: Sequence[str] = (),
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> tuple[Spec, bool]:
    """(spec, fresh): the spec already released for these texts, parameters and profile (free:
    re-sending published output is post-processing), else a new `private_spec`, debited from
    `ledger` durably before it is returned (BudgetExceeded, and no spec, over the cap)."""
    unit = "person" if persons else "record"
    dataset = dataset_id(texts)
    cached = ledger.cached_spec(
        dataset, profile_id=profile.profile_id, epsilon=epsilon, delta=delta, unit=unit
    )
    if cached is not None:
        return cached, False
    spec = private_spec(
        texts, profile, epsilon=epsilon, delta=delta, persons=persons, embedder=embedder, progress=progress
    )
    ledger.record_spec(dataset, spec, profile, destination=destination)
    return spec, True


def public_spec(texts: Sequence[str], profile: SpecProfile, *, embedder: Embedder | None = None) -> Spec:
    """The exact spec of public data (a publisher's choice; carries no privacy guarantee)."""
    return exact_spec(features_of(texts, profile, embedder=embedder), profile)
