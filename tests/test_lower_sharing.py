"""Lower-layer activations shared by training runs on one base (`objectives.LowerCaches`), and
the lab's grouping of the recipes that share them (versions of one data set)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from lmdock.client.publish.training import TrainingConfig, train_adapter
from lmdock.client.training.objectives import LowerCaches
from lmdock.common.card import Card
from lmdock.common.package import TaskInfo
from lmdock.lab.building import Recipe, lower_layer_groups
from safetensors.torch import load_file

GENERATION = TaskInfo(kind="generation")
CONFIG = TrainingConfig(epochs=1, learning_rate=2e-2, batch_size=4, max_tokens=16, rank=4, layers=1)


def _records(ids: Sequence[int]) -> tuple[list[str], list[str]]:
    return [f"record {i} reads {'good' if i % 2 else 'bad'}" for i in ids], [
        "positive" if i % 2 else "negative" for i in ids
    ]


def _train(base: Path, out: Path, ids: range, caches: LowerCaches | None) -> dict[str, torch.Tensor]:
    texts, answers = _records(ids)
    train_adapter(
        base_model=str(base),
        task=GENERATION,
        texts=texts,
        targets=answers,
        out_dir=out,
        config=CONFIG,
        lower_caches=caches,
    )
    return load_file(out / "adapter_model.safetensors")


def test_a_later_run_reads_the_lower_activations_an_earlier_one_computed(tiny_llama: Path, tmp_path) -> None:
    caches = LowerCaches()
    _train(tiny_llama, tmp_path / "first", range(0, 24), caches)
    cache = caches.of(tiny_llama.resolve(), 1, torch.float32, torch.device("cpu"))
    held = cache.used
    assert held > 0
    shared = _train(tiny_llama, tmp_path / "second", range(4, 20), caches)  # records of the first
    assert cache.used == held  # every row was read, none computed again
    alone = _train(tiny_llama, tmp_path / "alone", range(4, 20), None)
    assert shared.keys() == alone.keys()
    for name, weights in shared.items():  # the same adapter as trained without sharing
        torch.testing.assert_close(weights, alone[name], rtol=1e-5, atol=1e-6)
    # other lower layers (another split) get a cache of their own
    assert caches.of(tiny_llama.resolve(), 0, torch.float32, torch.device("cpu")) is not cache


def _recipe(name: str, *parts: range, layers: int = 8) -> Recipe:
    texts, answers = _records([i for part in parts for i in part])
    return Recipe(
        card=Card(id=f"lw-{name}", name=name, domain="finance", licence="CC0-1.0", publisher="tests"),
        labels=(),
        train_texts=tuple(texts),
        train_labels=tuple(answers),
        eval_texts=(),
        eval_labels=(),
        training=TrainingConfig(layers=layers),
        kind="generation",
        base_model="smollm2-135m-instruct",
    )


def test_versions_of_a_data_set_build_in_one_group_and_the_rest_alone() -> None:
    """a: records 0-199, b: 300-419, c: 0-149 and 300-449 (as the generative market's versions
    of one set); d another set; the generalist g a little of each and more; h adapts every
    layer (no lower layers to share)."""
    recipes = [
        _recipe("a", range(200)),
        _recipe("b", range(300, 420)),
        _recipe("c", range(150), range(300, 450)),
        _recipe("d", range(1000, 1200)),
        _recipe("g", range(0, 2000, 10), range(3000, 4000)),
        _recipe("h", range(200), layers=0),
    ]
    groups = [[r.card.name for r in group] for group in lower_layer_groups(recipes)]
    assert groups == [["g"], ["a", "b", "c"], ["d"], ["h"]]  # the most records first
