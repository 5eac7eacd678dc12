"""The demo's four reference learnwares, built from the samples shipped in lmdock/lab/data.

Packages are cached under WORKDIR/packages (see `lmdock.lab.building`), so a second run only
reads them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmdock.client.publish.training import TrainingConfig
from lmdock.common.profile import SpecProfile
from lmdock.lab.building import Log, Recipe, build_packages, publisher_key
from lmdock.lab.refdata import REFERENCE_SETS, ReferenceSet, label_set, load_split

__all__ = ["build_reference"]

#: Quick mode (tests, CI) trains on this many records for one epoch: the path, not the quality.
QUICK_RECORDS = 64


def _recipe(ref: ReferenceSet, quick: bool) -> Recipe:
    train_texts, train_labels = load_split(ref.sample, "train")
    eval_texts, eval_labels = load_split(ref.sample, "eval")
    spec_texts = train_texts  # the spec always summarises the whole training split
    if quick:
        train_texts, train_labels = train_texts[:QUICK_RECORDS], train_labels[:QUICK_RECORDS]
        config = TrainingConfig(epochs=1, max_tokens=32)
    else:
        config = TrainingConfig(epochs=ref.epochs, max_tokens=ref.max_tokens)
    return Recipe(
        card=ref.card,
        labels=label_set(ref.sample),
        train_texts=tuple(train_texts),
        train_labels=tuple(train_labels),
        eval_texts=tuple(eval_texts),
        eval_labels=tuple(eval_labels),
        training=config,
        spec_texts=tuple(spec_texts),
    )


def build_reference(
    workdir: Path,
    profile: SpecProfile,
    *,
    sets: Sequence[ReferenceSet] = REFERENCE_SETS,
    log: Log = print,
    quick: bool = False,
) -> list[Path]:
    """Paths of the signed reference packages, building the missing ones."""
    packages = workdir / ("packages-quick" if quick else "packages")
    recipes = [_recipe(ref, quick) for ref in sets]
    built = build_packages(recipes, packages, profile=profile, key_file=publisher_key(workdir), log=log)
    return [b.package for b in built]
