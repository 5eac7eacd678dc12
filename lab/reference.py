"""Builds the reference learnwares: train, evaluate, specify, sign and package each one.

Packages are cached under WORKDIR/packages keyed by a fingerprint of everything that went into
them (data, training settings, profile), so a second run only reads them back.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from lmdock.client.embedder import Embedder
from lmdock.client.operations import score_predictions
from lmdock.client.publishing import package_learnware
from lmdock.client.runtime import load_learnware, zero_shot_classify
from lmdock.client.training import ClassifierTraining, train_classifier
from lmdock.common.canonical import canonical_json, sha256_hex
from lmdock.common.embedders import DEFAULT_EMBEDDER
from lmdock.common.hashing import sha256_file
from lmdock.common.package import FORMAT, TaskInfo
from lmdock.common.profile import SpecProfile
from lmdock.common.signing import generate_key, load_private_key, save_private_key
from lmdock.lab.refdata import DATA_DIR, REFERENCE_SETS, ReferenceSet, label_set, load_split

__all__ = ["PUBLISHER", "build_reference"]

PUBLISHER = "lmdock-reference"
Log = Callable[[str], None]


def _publisher_key(workdir: Path) -> object:
    path = workdir / "publisher.key"
    if not path.exists():
        save_private_key(generate_key(), path)
    return load_private_key(path)


def _fingerprint(ref: ReferenceSet, config: ClassifierTraining, profile: SpecProfile, quick: bool) -> str:
    return sha256_hex(
        canonical_json(
            {
                "format": FORMAT,
                "quick": quick,
                "set": dataclasses.asdict(ref),
                "training": dataclasses.asdict(config),
                "profile": profile.profile_id,
                "data": sha256_file(DATA_DIR / f"{ref.sample}.jsonl"),
            }
        )
    )[:16]


#: Quick mode (tests, CI) trains on this many records for one epoch: the path, not the quality.
QUICK_RECORDS = 64


def _training_config(ref: ReferenceSet, quick: bool) -> ClassifierTraining:
    if quick:
        return ClassifierTraining(epochs=1, max_tokens=32)
    return ClassifierTraining(epochs=ref.epochs, max_tokens=ref.max_tokens)


def build_one(
    ref: ReferenceSet,
    out: Path,
    *,
    profile: SpecProfile,
    key: object,
    embedder: Embedder,
    log: Log,
    quick: bool = False,
) -> None:
    config = _training_config(ref, quick)
    labels = label_set(ref.sample)
    train_texts, train_labels = load_split(ref.sample, "train")
    spec_texts = train_texts  # the spec always summarises the whole training split
    if quick:
        train_texts, train_labels = train_texts[:QUICK_RECORDS], train_labels[:QUICK_RECORDS]
    eval_texts, eval_labels = load_split(ref.sample, "eval")
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "adapter"
        log(f"  training {ref.learnware_id} on {len(train_texts)} records ({config.epochs} epochs)")
        stats = train_classifier(
            base_model=DEFAULT_EMBEDDER,
            texts=train_texts,
            labels=train_labels,
            label_names=labels,
            out_dir=adapter,
            config=config,
        )
        task = TaskInfo(kind="classification", labels=labels)
        model = load_learnware(adapter, base_model=DEFAULT_EMBEDDER, task=task)
        accuracy = score_predictions(model.predict(eval_texts), eval_labels) or 0.0
        base = score_predictions(zero_shot_classify(DEFAULT_EMBEDDER, eval_texts, labels), eval_labels) or 0.0
        majority = max(eval_labels.count(label) for label in labels) / len(eval_labels)
        log(
            f"  {ref.learnware_id}: accuracy {accuracy:.3f} (base zero-shot {base:.3f}, "
            f"majority {majority:.3f}) in {stats['seconds']:.0f}s"
        )
        card = (
            f"# {ref.name}\n\n{ref.description}\n\n"
            f"Base model: {DEFAULT_EMBEDDER} + LoRA (r={config.rank}) and a {len(labels)}-way head.\n"
            f"Held-out accuracy {accuracy:.3f}; base model zero-shot {base:.3f}; "
            f"majority class {majority:.3f} ({len(eval_texts)} records).\n\n"
            f"Data: see lmdock/lab/data/README.md "
            f"(licence {ref.licence}).\n"
        )
        package_learnware(
            adapter,
            out,
            profile=profile,
            spec_texts=spec_texts,
            key=key,  # type: ignore[arg-type]
            learnware_id=ref.learnware_id,
            name=ref.name,
            domain=ref.domain,
            base_model=DEFAULT_EMBEDDER,
            licence=ref.licence,
            publisher=PUBLISHER,
            task=task,
            description=ref.description,
            tags=ref.tags,
            eval_scores={
                "accuracy": accuracy,
                "base_zero_shot_accuracy": base,
                "majority_accuracy": majority,
            },
            training={
                "dp": False,
                "records": len(train_texts),
                **{k: v for k, v in dataclasses.asdict(config).items() if k != "target_modules"},
            },
            model_card=card,
            embedder=embedder,
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
    packages.mkdir(parents=True, exist_ok=True)
    key = _publisher_key(workdir)
    wanted = {
        ref: packages
        / f"{ref.learnware_id}-{_fingerprint(ref, _training_config(ref, quick), profile, quick)}.tar"
        for ref in sets
    }
    embedder: Embedder | None = None
    for ref, path in wanted.items():
        if path.exists():
            continue
        embedder = embedder or Embedder(profile)
        build_one(ref, path, profile=profile, key=key, embedder=embedder, log=log, quick=quick)
        for stale in packages.glob(f"{ref.learnware_id}-*.tar"):
            if stale != path:
                stale.unlink()
    return list(wanted.values())
