"""What a reference market is made of: learnware and user-task definitions, and their data.

A `LearnwareDef` names the records a learnware trains on (one or more `Selection`s) and how;
a `TaskDef` names a user task's records and which learnwares count as *right* for it.
`materialize` reads the data and turns them into training recipes and user tasks, checking
that no user-task text occurs in any learnware's training or evaluation data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmdock.client.publish.training import TrainingConfig
from lmdock.common.card import Card
from lmdock.common.embedder_files import DEFAULT_EMBEDDER
from lmdock.common.errors import InvalidArgument
from lmdock.lab.building import PUBLISHER, Recipe
from lmdock.lab.datasets import Record, Selection, load_records, position, select

__all__ = [
    "LearnwareDef",
    "MarketDef",
    "MaterializedMarket",
    "Prompt",
    "TaskDef",
    "UserTask",
    "materialize",
]


@dataclass(frozen=True)
class Prompt:
    """How a record becomes a generative learnware's instruction, and how its answer is scored.

    The record's text is cut to 3 * max_tokens characters (a long context loses its end, not the
    question that heads it) and put into `template`; `{choices}` lists the answer set. A closed
    answer set (labels, letters) is scored by log-likelihood over its choices; an open one by
    the gold continuation's token probability (`lmdock.lab.loglik`).
    """

    template: str = "{text}"
    max_tokens: int = 128  # the whole prompt's cap, in tokens (chat template included)
    closed: bool = True

    def render(self, text: str, choices: Sequence[str]) -> str:
        cap = 3 * self.max_tokens
        cut = text if len(text) <= cap else text[:cap].rstrip() + " …"
        return self.template.format(text=cut, choices=", ".join(choices))


@dataclass(frozen=True)
class LearnwareDef:
    id: str
    name: str
    domain: str
    description: str
    data: tuple[Selection, ...]
    tags: tuple[str, ...] = ()
    max_tokens: int = 64
    #: None: about EXAMPLES_SEEN training examples in all (3 to 8 epochs).
    epochs: int | None = None
    eval_fraction: float = 0.15
    #: A generative learnware (None: a classifier): its prompt, base model and training settings.
    prompt: Prompt | None = None
    training: TrainingConfig | None = None


@dataclass(frozen=True)
class TaskDef:
    id: str
    domain: str
    description: str
    data: tuple[Selection, ...]
    right: tuple[str, ...]  # learnwares that count as the right answer for identification
    prompt: Prompt | None = None  # a generative task (None: classification)


@dataclass(frozen=True)
class MarketDef:
    name: str
    learnwares: tuple[LearnwareDef, ...]
    tasks: tuple[TaskDef, ...]
    licences: dict[str, str]  # data set -> licence and attribution
    base_model: str = DEFAULT_EMBEDDER


@dataclass(frozen=True)
class UserTask:
    id: str
    domain: str
    description: str
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    right: tuple[str, ...]
    datasets: tuple[str, ...]
    #: Generative tasks: the instructions the model reads, and the closed answer set (() = open).
    prompts: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    prompt_tokens: int = 0  # the prompts' token cap (`Prompt.max_tokens`)

    @property
    def label_set(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.labels)))


@dataclass(frozen=True)
class MaterializedMarket:
    """A materialized market definition: recipes to build, tasks to evaluate, and where the data came from."""

    name: str
    recipes: tuple[Recipe, ...]
    tasks: tuple[UserTask, ...]
    licences: dict[str, str]
    learnware_datasets: dict[str, tuple[str, ...]]


EXAMPLES_SEEN = 1800


def _epochs(definition: LearnwareDef, n_train: int) -> int:
    if definition.epochs is not None:
        return definition.epochs
    return min(8, max(3, math.ceil(EXAMPLES_SEEN / max(n_train, 1))))


class _Data:
    """Loads each data set once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, list[Record]] = {}

    def pairs(self, selections: Sequence[Selection]) -> list[tuple[Record, str]]:
        out = []
        for s in selections:
            if s.dataset not in self._cache:
                self._cache[s.dataset] = load_records(self.root, s.dataset)
            out.extend(select(self._cache[s.dataset], s))
        return out


def _recipe(
    definition: LearnwareDef,
    selected: list[tuple[Record, str]],
    licences: dict[str, str],
    quick: bool,
    base_model: str,
) -> Recipe:
    # in split order across all selections, so a multi-source learnware evaluates on every source
    pairs = sorted(selected, key=lambda p: position(p[0].dataset, p[0].id))
    n_eval = math.ceil(definition.eval_fraction * len(pairs))
    evaluation, train = pairs[:n_eval], pairs[n_eval:]
    labels = tuple(sorted({label for _, label in train}))
    prompt = definition.prompt
    if prompt is not None and not prompt.closed:
        labels = ()
    if (prompt is None and len(labels) < 2) or not evaluation or not train:
        raise InvalidArgument(f"learnware {definition.id}: too little data ({len(pairs)} records)")
    if definition.training is not None:
        config = definition.training  # a generative learnware states its settings
    else:
        config = TrainingConfig(epochs=_epochs(definition, len(train)), max_tokens=definition.max_tokens)
        if quick:
            config = TrainingConfig(epochs=3, max_tokens=32)

    def shown(records: list[tuple[Record, str]]) -> tuple[str, ...]:
        if prompt is None:
            return tuple(r.text for r, _ in records)
        return tuple(prompt.render(r.text, labels) for r, _ in records)

    datasets = sorted({s.dataset for s in definition.data})
    return Recipe(
        card=Card(
            id=definition.id,
            name=definition.name,
            domain=definition.domain,
            licence=" + ".join(sorted({licences[d].split(";")[0] for d in datasets})),
            publisher=PUBLISHER,
            description=definition.description,
            tags=definition.tags,
        ),
        labels=labels,
        train_texts=shown(train),
        train_labels=tuple(label for _, label in train),
        eval_texts=shown(evaluation),
        eval_labels=tuple(label for _, label in evaluation),
        training=config,
        # the spec summarises the raw texts, as a user's spec does (the prompt is the model's side)
        spec_texts=() if prompt is None else tuple(r.text for r, _ in train),
        kind="classification" if prompt is None else "generation",
        base_model=base_model,
    )


def _task(definition: TaskDef, data: _Data) -> tuple[UserTask, list[Record]]:
    pairs = data.pairs(definition.data)
    if len(pairs) < 20:
        raise InvalidArgument(f"task {definition.id}: only {len(pairs)} records")
    prompt = definition.prompt
    choices = tuple(sorted({label for _, label in pairs})) if prompt is not None and prompt.closed else ()
    task = UserTask(
        id=definition.id,
        domain=definition.domain,
        description=definition.description,
        texts=tuple(r.text for r, _ in pairs),
        labels=tuple(label for _, label in pairs),
        right=definition.right,
        datasets=tuple(sorted({s.dataset for s in definition.data})),
        prompts=() if prompt is None else tuple(prompt.render(r.text, choices) for r, _ in pairs),
        choices=choices,
        prompt_tokens=0 if prompt is None else prompt.max_tokens,
    )
    return task, [r for r, _ in pairs]


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def materialize(catalogue: MarketDef, root: Path, *, quick: bool = False) -> MaterializedMarket:
    """Read the data under `root` and build every recipe and task of `catalogue`."""
    data = _Data(root)
    ids = [d.id for d in catalogue.learnwares]
    if len(set(ids)) != len(ids):
        raise InvalidArgument("learnware ids must be unique")
    selected = {d.id: data.pairs(d.data) for d in catalogue.learnwares}
    used_ids = {(r.dataset, r.id) for pairs in selected.values() for r, _ in pairs}
    used_texts = {_normal(r.text) for pairs in selected.values() for r, _ in pairs}
    recipes = tuple(
        _recipe(d, selected[d.id], catalogue.licences, quick, catalogue.base_model)
        for d in catalogue.learnwares
    )
    tasks = []
    for definition in catalogue.tasks:
        unknown = set(definition.right) - set(ids)
        if unknown:
            raise InvalidArgument(f"task {definition.id}: unknown right learnwares {sorted(unknown)}")
        task, records = _task(definition, data)
        leaked = [r for r in records if (r.dataset, r.id) in used_ids or _normal(r.text) in used_texts]
        if leaked:
            raise InvalidArgument(f"task {definition.id} shares {len(leaked)} records with learnware data")
        tasks.append(task)
    return MaterializedMarket(
        name=catalogue.name,
        recipes=recipes,
        tasks=tuple(tasks),
        licences=catalogue.licences,
        learnware_datasets={d.id: tuple(sorted({s.dataset for s in d.data})) for d in catalogue.learnwares},
    )
