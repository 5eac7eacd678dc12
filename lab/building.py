"""Train, evaluate, specify, sign and package learnwares from recipes, with a build cache.

A package is cached as FOLDER/<id>-<fingerprint>.tar, the fingerprint covering everything that
went into it (data, labels, training settings, package format and the market's spec profile
id), so a changed profile or recipe rebuilds it and an unchanged one is only read back. Beside
each package a small JSON file keeps what the build measured (training time, held-out scores)
and the mean embedding of the training texts (for the LoraRetriever-style baseline).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from lmdock.client.files import atomic_write_text
from lmdock.client.operations import score_predictions
from lmdock.client.progress import ProgressLines, TrainingProgress
from lmdock.client.publish.package import package_learnware
from lmdock.client.publish.training import TrainingConfig, train_adapter, train_classifier
from lmdock.client.runtime import load_learnware, zero_shot_classify
from lmdock.client.training.objectives import LowerCaches
from lmdock.common.canonical import canonical_json, sha256_hex
from lmdock.common.card import Card
from lmdock.common.embedder_files import DEFAULT_EMBEDDER
from lmdock.common.package import FORMAT, TaskInfo
from lmdock.common.profile import SpecProfile
from lmdock.common.signing import generate_key, load_private_key, save_private_key
from lmdock.lab.embeddings import CachingEmbedder

__all__ = [
    "PUBLISHER",
    "Built",
    "Log",
    "Recipe",
    "build_in",
    "build_packages",
    "lower_layer_groups",
    "publisher_key",
]

PUBLISHER = "lmdock-reference"
Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    card: Card
    labels: tuple[str, ...]
    train_texts: tuple[str, ...]
    train_labels: tuple[str, ...]
    eval_texts: tuple[str, ...]
    eval_labels: tuple[str, ...]
    training: TrainingConfig
    #: What the spec summarises; empty means the training texts.
    spec_texts: tuple[str, ...] = ()
    kind: str = "classification"  # or "generation": train_texts are prompts, train_labels answers
    base_model: str = DEFAULT_EMBEDDER
    #: Where a generative adapter trains (`lmdock-lab eval --generative --device`); in the
    #: fingerprint, since a bfloat16 build on a GPU is another artefact than the cpu's.
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def summarised_texts(self) -> tuple[str, ...]:
        return self.spec_texts or self.train_texts

    def fingerprint(self, profile: SpecProfile) -> str:
        data = dataclasses.asdict(self)
        card = data.pop("card")
        # Flat, as recipes were before they held a card, so cached packages keep their names; the
        # publisher and version (always PUBLISHER's default then) count only where they differ.
        data["learnware_id"] = card.pop("id")
        for key, usual in (("publisher", PUBLISHER), ("version", Card.version)):
            if card[key] == usual:
                del card[key]
        data.update(card)
        for key, usual in (
            ("kind", "classification"),
            ("base_model", DEFAULT_EMBEDDER),
            ("device", "cpu"),
            ("dtype", "float32"),
        ):
            if data[key] == usual:  # as before these fields, so cached packages keep their names
                del data[key]
        for key in ("train_texts", "train_labels", "eval_texts", "eval_labels", "spec_texts"):
            data[key] = sha256_hex(canonical_json(list(data[key])))
        return sha256_hex(canonical_json({"format": FORMAT, "profile": profile.profile_id, "recipe": data}))[
            :16
        ]


@dataclass(frozen=True)
class Built:
    recipe: Recipe
    package: Path
    stats: dict[str, Any]

    @property
    def mean_embedding(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.stats["mean_embedding"], dtype=np.float64)


def publisher_key(workdir: Path) -> Path:
    """The file of the reference publisher's signing key, created on first use."""
    path = workdir / "publisher.key"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        save_private_key(generate_key(), path)
    return path


def _train_classifier(
    recipe: Recipe, adapter: Path, progress: TrainingProgress
) -> tuple[dict[str, float], str]:
    """Train a classifier; its held-out scores and the model card's line about them."""
    config = recipe.training
    task = TaskInfo(kind="classification", labels=recipe.labels)
    train_classifier(
        base_model=recipe.base_model,
        texts=recipe.train_texts,
        labels=recipe.train_labels,
        label_names=recipe.labels,
        out_dir=adapter,
        config=config,
        progress=progress,
    )
    model = load_learnware(adapter, base_model=recipe.base_model, task=task)
    eval_texts, gold = list(recipe.eval_texts), list(recipe.eval_labels)
    accuracy = score_predictions(model.predict(eval_texts), gold) or 0.0
    base = score_predictions(zero_shot_classify(recipe.base_model, eval_texts, recipe.labels), gold) or 0.0
    majority = max(gold.count(label) for label in set(gold)) / len(gold)
    scores = {"accuracy": accuracy, "base_zero_shot_accuracy": base, "majority_accuracy": majority}
    card = (
        f"Base model: {recipe.base_model} + LoRA (r={config.rank}) and a {len(recipe.labels)}-way head.\n"
        f"Held-out accuracy {accuracy:.3f}; base model zero-shot {base:.3f}; "
        f"majority class {majority:.3f} ({len(gold)} records).\n"
    )
    return scores, card


def _train_generator(
    recipe: Recipe, adapter: Path, progress: TrainingProgress, lower_caches: LowerCaches
) -> tuple[dict[str, float], str]:
    """Train a generative adapter (answers after the chat template's prompt); the lab's eval
    scores it on the user tasks, so the build states only its training loss."""
    config = recipe.training
    report = train_adapter(
        base_model=recipe.base_model,
        task=TaskInfo(kind="generation"),
        texts=recipe.train_texts,
        targets=recipe.train_labels,
        out_dir=adapter,
        config=config,
        progress=progress,
        device=recipe.device,
        dtype=recipe.dtype,
        lower_caches=lower_caches,
    )
    layers = f"top {config.layers} layers" if config.layers else "all layers"
    card = (
        f"Base model: {recipe.base_model} + LoRA (r={config.rank}, {layers}), generating the answer.\n"
        f"Final training loss {report.final_loss:.3f} (mean cross-entropy of the answer tokens).\n"
    )
    return {"train_loss": report.final_loss}, card


#: The sidecar's names for a classifier's held-out scores (older caches read them so).
_SIDECAR = {"accuracy": "eval_accuracy", "base_zero_shot_accuracy": "eval_base_accuracy"}


def _sidecar_scores(scores: dict[str, float]) -> dict[str, float]:
    return {_SIDECAR.get(k, "eval_" + k.removesuffix("_accuracy")): v for k, v in scores.items()}


def _build(
    recipe: Recipe,
    out: Path,
    *,
    profile: SpecProfile,
    key: Any,
    embedder: CachingEmbedder,
    lower_caches: LowerCaches,
    log: Log,
) -> dict[str, Any]:
    config = recipe.training
    generative = recipe.kind == "generation"
    task = (
        TaskInfo(kind="generation") if generative else TaskInfo(kind="classification", labels=recipe.labels)
    )
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "adapter"
        log(f"  training {recipe.card.id} on {len(recipe.train_texts)} records ({config.epochs} epochs)")
        started, cpu_started = time.perf_counter(), time.process_time()
        steps = ProgressLines(f"  {recipe.card.id} training steps", log, unit=" steps")  # every 30 s
        if generative:
            scores, lines = _train_generator(recipe, adapter, steps, lower_caches)
        else:
            scores, lines = _train_classifier(recipe, adapter, steps)
        train_seconds = time.perf_counter() - started
        train_cpu_seconds = time.process_time() - cpu_started
        load = os.getloadavg()[0]  # what the machine was doing besides: training times depend on it
        log(
            f"  {recipe.card.id}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
            + f" in {train_seconds:.0f}s"
        )
        card = (
            f"# {recipe.card.name}\n\n{recipe.card.description}\n\n{lines}\n"
            f"Data licence: {recipe.card.licence} (see lmdock/lab/data/README.md and docs/results.md).\n"
        )
        started = time.perf_counter()
        package_learnware(
            adapter,
            out,
            profile=profile,
            spec_texts=recipe.summarised_texts,
            key=key,
            card=recipe.card,
            base_model=recipe.base_model,
            task=task,
            eval_scores=scores,
            training={
                "dp": False,
                "records": len(recipe.train_texts),
                **{k: v for k, v in dataclasses.asdict(config).items() if k != "target_modules"},
            },
            model_card=card,
            embedder=embedder,
        )
        package_seconds = time.perf_counter() - started
    mean = embedder.embed(recipe.summarised_texts).astype(np.float64).mean(axis=0)
    return {
        "train_seconds": round(train_seconds, 2),
        "train_cpu_seconds": round(train_cpu_seconds, 2),
        "train_load_1m": round(load, 2),
        "package_seconds": round(package_seconds, 2),
        **_sidecar_scores(scores),
        "eval_records": len(recipe.eval_labels),
        "package_bytes": out.stat().st_size,
        "mean_embedding": [round(float(x), 7) for x in mean],
    }


def _paths(recipe: Recipe, folder: Path, profile: SpecProfile) -> tuple[Path, Path]:
    package = folder / f"{recipe.card.id}-{recipe.fingerprint(profile)}.tar"
    return package, package.with_suffix(".json")


def _build_group(
    folder: Path,
    group: Sequence[Recipe],
    *,
    profile: SpecProfile,
    key_file: Path,
    embedder: CachingEmbedder,
    log: Log,
) -> None:
    """The recipes of one `lower_layer_groups` group, one after another, sharing one
    `LowerCaches` (dropped after the group, so a build holds one group's activations at most)."""
    lower_caches = LowerCaches()
    for recipe in group:
        _build_into(
            folder,
            recipe,
            profile=profile,
            key_file=key_file,
            embedder=embedder,
            lower_caches=lower_caches,
            log=log,
        )


def _build_into(
    folder: Path,
    recipe: Recipe,
    *,
    profile: SpecProfile,
    key_file: Path,
    embedder: CachingEmbedder,
    lower_caches: LowerCaches,
    log: Log,
) -> None:
    package, sidecar = _paths(recipe, folder, profile)
    partial = package.with_suffix(".tar.partial")
    key = load_private_key(key_file)
    stats = _build(
        recipe, partial, profile=profile, key=key, embedder=embedder, lower_caches=lower_caches, log=log
    )
    partial.replace(package)  # the package first: a missing sidecar only rebuilds
    atomic_write_text(sidecar, json.dumps(stats, indent=1, sort_keys=True))
    for stale in folder.glob(f"{recipe.card.id}-*"):
        fingerprint = stale.name[len(recipe.card.id) + 1 :].split(".")[0]
        if stale not in (package, sidecar) and len(fingerprint) == 16:  # not a longer id's file
            stale.unlink()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _worker(
    folder: Path, group: Sequence[Recipe], profile: SpecProfile, key_file: Path, threads: int
) -> list[str]:
    """One group's builds in a worker process (spawned: nothing is shared with the parent)."""
    import torch
    from lmdock.client.models import quiet_model_libraries

    quiet_model_libraries()
    torch.set_num_threads(threads)
    _build_group(
        folder, group, profile=profile, key_file=key_file, embedder=CachingEmbedder(profile), log=_stderr
    )
    return [r.card.id for r in group]


#: Two generative recipes build in one group, sharing their lower-layer activations, when their
#: training records overlap by at least this share of the larger one's (versions of a data set).
SHARED_RECORDS = 1 / 3


def lower_layer_groups(recipes: Sequence[Recipe]) -> list[list[Recipe]]:
    """`recipes` in groups to build one after another in one process, sharing lower-layer
    activations (`LowerCaches`): generative recipes adapting the same top layers of one base, on
    one device and dtype, linked where their training records overlap by `SHARED_RECORDS` of the
    larger's; every other recipe alone. Larger groups first (by records), so that parallel jobs
    finish together."""
    group_of = list(range(len(recipes)))

    def root(i: int) -> int:
        while group_of[i] != i:
            i = group_of[i]
        return i

    records = [set(zip(r.train_texts, r.train_labels, strict=True)) for r in recipes]
    for i, j in itertools.combinations(range(len(recipes)), 2):
        a, b = recipes[i], recipes[j]
        lower = (a.kind, a.base_model, a.training.layers, a.device, a.dtype)
        if (
            a.kind == "generation"
            and a.training.layers
            and lower == (b.kind, b.base_model, b.training.layers, b.device, b.dtype)
            and len(records[i] & records[j]) >= SHARED_RECORDS * max(len(records[i]), len(records[j]))
        ):
            group_of[root(j)] = root(i)
    groups: dict[int, list[Recipe]] = {}
    for i, recipe in enumerate(recipes):
        groups.setdefault(root(i), []).append(recipe)
    return sorted(groups.values(), key=lambda g: -sum(len(r.train_texts) for r in g))


def build_in(
    workdir: Path,
    recipes: Sequence[Recipe],
    *,
    profile: SpecProfile,
    log: Log = print,
    embedder: CachingEmbedder | None = None,
    jobs: int = 1,
) -> list[Built]:
    """`build_packages` into WORKDIR/packages, signed with WORKDIR's reference publisher key."""
    return build_packages(
        recipes,
        workdir / "packages",
        profile=profile,
        key_file=publisher_key(workdir),
        log=log,
        embedder=embedder,
        jobs=jobs,
    )


def build_packages(
    recipes: Sequence[Recipe],
    folder: Path,
    *,
    profile: SpecProfile,
    key_file: Path,
    log: Log = print,
    embedder: CachingEmbedder | None = None,
    jobs: int = 1,
) -> list[Built]:
    """Every recipe's signed package (and its build stats), building only what is missing.

    With jobs > 1 the missing ones are built in that many worker processes, each with as many
    torch threads as this process has, a `lower_layer_groups` group to a process.
    """
    folder.mkdir(parents=True, exist_ok=True)
    missing = [r for r in recipes if not all(p.exists() for p in _paths(r, folder, profile))]
    groups = lower_layer_groups(missing)
    if jobs > 1 and len(groups) > 1:
        import torch

        threads = torch.get_num_threads()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, folder, g, profile, key_file, threads) for g in groups]
            for future in as_completed(futures):
                future.result()
    else:
        embedder = embedder or CachingEmbedder(profile)
        for group in groups:
            _build_group(folder, group, profile=profile, key_file=key_file, embedder=embedder, log=log)
    built = []
    for recipe in recipes:
        package, sidecar = _paths(recipe, folder, profile)
        built.append(Built(recipe, package, json.loads(sidecar.read_text(encoding="utf-8"))))
    return built
