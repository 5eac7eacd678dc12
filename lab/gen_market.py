"""The reference generative market: SmolLM2-135M-Instruct + LoRA learnwares over the shared data.

33 learnwares over 10 data sets, in versions as the paper's market has them (different u-ranges
and sizes of the same data, ranks 4 / 8 / 16, learning rates 1e-3 / 2e-3 / 4e-3), so that search
must tell near neighbours apart; 12 user tasks. The split is the classification lab's
(`reference_market.TASKS` / `TRAIN`): user tasks at u < 0.4, learnwares at u >= 0.4, checked
by `definitions.materialize`.

Engineering for 2 CPU cores (`lmdock.lab.loglik`): LoRA on the top 8 of the 30 layers, so the
frozen lower 22 run once per scored batch for every adapter; prompts capped per data set
(`Prompt.max_tokens`, stated in docs/results.md); label and multiple-choice tasks scored from
the next-token distribution where their choices are single tokens; math learnwares train on
the worked solutions (`meta.solution`) and math is scored by the gold solution's token
probability, its final answer included (exact match is near zero at 135M).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from lmdock.client.publish.training import TrainingConfig
from lmdock.common.base_model_files import SMOLLM2
from lmdock.common.card import Card
from lmdock.lab.building import PUBLISHER, Recipe
from lmdock.lab.datasets import Selection
from lmdock.lab.definitions import LearnwareDef, MarketDef, Prompt, TaskDef
from lmdock.lab.reference_market import (
    BANKING,
    BANKING_GROUPS,
    GSM8K,
    LICENCES,
    MATH,
    MEDQUAD,
    MEDQUAD_SOURCES,
    PUBMEDQA,
    STRATEGYQA,
    TASKS,
    TATQA,
    TFNS,
)

__all__ = ["GENERALIST_K", "GEN_FULL", "GEN_QUICK", "TOP_LAYERS", "generalist_recipe"]

COVIDQA = "medical/covid_qa"
AQUA = "math/aqua_rat"
TOP_LAYERS = 8
#: The generalist trains for GENERALIST_K times a (median) learnware's optimizer steps.
GENERALIST_K = 3
CHOICE_TASK_SIZE = 100
OPEN_TASK_SIZE = 60

LABEL = "{text}\n\nAnswer with one of: {choices}."
P_TFNS = Prompt("Financial news: {text}\n\nIts sentiment, one of: {choices}.", max_tokens=96)
P_BANKING = Prompt("Customer message: {text}\n\nIts intent, one of: {choices}.", max_tokens=192)
P_TATQA = Prompt("{text}\n\nAnswer briefly.", max_tokens=256, closed=False)
P_PUBMEDQA = Prompt(LABEL, max_tokens=256)
P_MEDQUAD_TYPE = Prompt("Question: {text}\n\nIts type, one of: {choices}.", max_tokens=128)
P_MEDQUAD_ANSWER = Prompt("{text}", max_tokens=64, closed=False)
P_COVIDQA = Prompt("{text}\n\nAnswer from the context.", max_tokens=256, closed=False)
P_SOLVE = Prompt("{text}\n\nSolve it step by step.", max_tokens=160, closed=False)
P_AQUA = Prompt("{text}\n\nAnswer with the letter of the correct option.", max_tokens=192)
P_STRATEGYQA = Prompt(LABEL, max_tokens=64)

#: (u-range, record cap, rank, learning rate) of each version of a learnware.
Version = tuple[tuple[float, float], int, int, float]
VERSIONS: tuple[Version, ...] = (
    ((0.4, 0.7), 200, 8, 2e-3),
    ((0.7, 1.0), 120, 4, 4e-3),
    ((0.4, 1.0), 300, 16, 1e-3),
)


def _config(rank: int, learning_rate: float, prompt: Prompt) -> TrainingConfig:
    return TrainingConfig(
        epochs=2,
        learning_rate=learning_rate,
        batch_size=8,
        max_tokens=prompt.max_tokens,
        rank=rank,
        alpha=2 * rank,
        layers=TOP_LAYERS,
    )


def _versions(
    key: str, name: str, domain: str, description: str, dataset: str, target: str, prompt: Prompt
) -> list[LearnwareDef]:
    return [
        LearnwareDef(
            id=f"{key}-{'abc'[i]}",
            name=f"{name} ({'abc'[i]})",
            domain=domain,
            description=f"{description} Version {'abc'[i]}: {limit} records, r = {rank}, lr = {lr:g}.",
            data=(Selection(dataset, target, part, limit=limit),),
            eval_fraction=0.1,
            prompt=prompt,
            training=_config(rank, lr, prompt),
        )
        for i, (part, limit, rank, lr) in enumerate(VERSIONS)
    ]


def _single(
    id_: str, name: str, domain: str, description: str, data: Selection, prompt: Prompt
) -> LearnwareDef:
    """A learnware in one version (r = 8, lr = 2e-3): its data set's subsets are the versions."""
    return LearnwareDef(
        id=id_,
        name=name,
        domain=domain,
        description=description,
        data=(data,),
        eval_fraction=0.1,
        prompt=prompt,
        training=_config(8, 2e-3, prompt),
    )


def _learnwares() -> list[LearnwareDef]:
    out = _versions(
        "gen-fin-sentiment",
        "Finance news sentiment",
        "finance",
        "Sentiment of finance news tweets.",
        TFNS,
        "label",
        P_TFNS,
    )
    for group in ("cards", "transfers", "payments"):
        intents = tuple(BANKING_GROUPS[group].split())
        out.append(
            _single(
                f"gen-fin-banking-{group}",
                f"Banking intents: {group}",
                "finance",
                f"Names the intent of a retail-banking message about {group} (BANKING77).",
                Selection(BANKING, "label", (0.4, 1.0), where=(("label", intents),)),
                P_BANKING,
            )
        )
    out += _versions(
        "gen-fin-tatqa",
        "Annual-report QA",
        "finance",
        "Answers questions over annual-report tables and text (TAT-QA).",
        TATQA,
        "answer",
        P_TATQA,
    )
    out += _versions(
        "gen-med-pubmedqa",
        "Biomedical yes/no/maybe",
        "medical",
        "Answers research questions from PubMed abstracts (PubMedQA).",
        PUBMEDQA,
        "answer",
        P_PUBMEDQA,
    )
    for key in ("ghr", "gard", "niddk-nhlbi"):
        sources = MEDQUAD_SOURCES[key]
        out.append(
            _single(
                f"gen-med-qtype-{key}",
                f"Medical question type ({'/'.join(sources)})",
                "medical",
                f"Names the type of a health question from {', '.join(sources)} (MedQuAD).",
                Selection(MEDQUAD, "label", (0.4, 1.0), where=(("meta.source", sources),), limit=300),
                P_MEDQUAD_TYPE,
            )
        )
    out += _versions(
        "gen-med-answers",
        "Consumer health answers",
        "medical",
        "Answers consumer health questions (MedQuAD).",
        MEDQUAD,
        "answer",
        P_MEDQUAD_ANSWER,
    )[:2]
    out += _versions(
        "gen-med-covidqa",
        "COVID-19 literature QA",
        "medical",
        "Answers questions from COVID-19 papers (COVID-QA).",
        COVIDQA,
        "answer",
        P_COVIDQA,
    )
    out += _versions(
        "gen-math-gsm8k",
        "Grade-school math",
        "math",
        "Solves word problems step by step (GSM8K worked solutions).",
        GSM8K,
        "meta.solution",
        P_SOLVE,
    )
    out += _versions(
        "gen-math-competition",
        "Competition math",
        "math",
        "Solves competition problems step by step (MATH worked solutions).",
        MATH,
        "meta.solution",
        P_SOLVE,
    )
    out += _versions(
        "gen-math-aqua",
        "Math multiple choice",
        "math",
        "Picks the letter of the right option of algebra word problems (AQuA-RAT).",
        AQUA,
        "answer",
        P_AQUA,
    )
    out += _versions(
        "gen-gen-strategyqa",
        "Trivia yes/no",
        "general",
        "Answers yes/no questions that need implicit reasoning (StrategyQA).",
        STRATEGYQA,
        "answer",
        P_STRATEGYQA,
    )[:2]
    return out


def _task(
    id_: str, domain: str, description: str, data: Selection, right: tuple[str, ...], prompt: Prompt
) -> TaskDef:
    return TaskDef(id_, domain, description, (data,), right, prompt=prompt)


def _tasks() -> list[TaskDef]:
    def versions(key: str, n: int = 3) -> tuple[str, ...]:
        return tuple(f"{key}-{v}" for v in "abc"[:n])

    c, o = CHOICE_TASK_SIZE, OPEN_TASK_SIZE
    cards = tuple(BANKING_GROUPS["cards"].split())
    transfers = tuple(BANKING_GROUPS["transfers"].split())
    return [
        _task(
            "gen-fin-sentiment",
            "finance",
            "Sentiment of finance news tweets",
            Selection(TFNS, "label", TASKS, limit=c),
            versions("gen-fin-sentiment"),
            P_TFNS,
        ),
        _task(
            "gen-fin-banking-cards",
            "finance",
            "Banking intents about cards",
            Selection(BANKING, "label", TASKS, where=(("label", cards),), limit=c),
            ("gen-fin-banking-cards",),
            P_BANKING,
        ),
        _task(
            "gen-fin-banking-transfers",
            "finance",
            "Banking intents about transfers",
            Selection(BANKING, "label", TASKS, where=(("label", transfers),), limit=c),
            ("gen-fin-banking-transfers",),
            P_BANKING,
        ),
        _task(
            "gen-fin-tatqa",
            "finance",
            "Questions over annual reports",
            Selection(TATQA, "answer", TASKS, limit=o),
            versions("gen-fin-tatqa"),
            P_TATQA,
        ),
        _task(
            "gen-med-pubmedqa",
            "medical",
            "Yes/no/maybe questions on abstracts",
            Selection(PUBMEDQA, "answer", TASKS, limit=c),
            versions("gen-med-pubmedqa"),
            P_PUBMEDQA,
        ),
        _task(
            "gen-med-qtype-ghr",
            "medical",
            "Question types of GHR questions",
            Selection(MEDQUAD, "label", TASKS, where=(("meta.source", MEDQUAD_SOURCES["ghr"]),), limit=c),
            ("gen-med-qtype-ghr",),
            P_MEDQUAD_TYPE,
        ),
        _task(
            "gen-med-answers",
            "medical",
            "Answers to consumer health questions",
            Selection(MEDQUAD, "answer", TASKS, limit=o),
            versions("gen-med-answers", 2),
            P_MEDQUAD_ANSWER,
        ),
        _task(
            "gen-med-covidqa",
            "medical",
            "Questions on COVID-19 papers",
            Selection(COVIDQA, "answer", TASKS, limit=o),
            versions("gen-med-covidqa"),
            P_COVIDQA,
        ),
        _task(
            "gen-math-gsm8k",
            "math",
            "Grade-school word problems",
            Selection(GSM8K, "meta.solution", TASKS, limit=o),
            versions("gen-math-gsm8k"),
            P_SOLVE,
        ),
        _task(
            "gen-math-competition",
            "math",
            "Competition math problems",
            Selection(MATH, "meta.solution", TASKS, limit=o),
            versions("gen-math-competition"),
            P_SOLVE,
        ),
        _task(
            "gen-math-aqua",
            "math",
            "Multiple-choice algebra word problems",
            Selection(AQUA, "answer", TASKS, limit=c),
            versions("gen-math-aqua"),
            P_AQUA,
        ),
        _task(
            "gen-gen-strategyqa",
            "general",
            "Open-domain yes/no questions",
            Selection(STRATEGYQA, "answer", TASKS, limit=c),
            versions("gen-gen-strategyqa", 2),
            P_STRATEGYQA,
        ),
    ]


GEN_FULL = MarketDef(
    name="generative",
    learnwares=tuple(_learnwares()),
    tasks=tuple(_tasks()),
    licences=LICENCES,
    base_model=SMOLLM2,
)

#: The quick slice on the shipped samples: three tiny learnwares (one optimizer step, LoRA on the
#: top 2 layers) and three 24-text label tasks (6 scored); it exercises every column, not the science.
_QUICK_PROMPT = Prompt(LABEL, max_tokens=48)
_QUICK_TRAINING = TrainingConfig(
    epochs=1, learning_rate=4e-3, batch_size=8, max_tokens=48, rank=4, alpha=8, layers=2
)
_QUICK = {
    "tfns": ("finance", "Finance news sentiment", None),
    "medquad": ("medical", "Medical question type", ("treatment", "symptoms", "causes")),
    "math_competition": ("math", "Math problem subject", ("Algebra", "Geometry")),
}


def _quick_selection(sample: str, part: tuple[float, float], limit: int) -> Selection:
    labels = _QUICK[sample][2]
    return Selection(sample, "label", part, where=(("label", labels),) if labels else (), limit=limit)


GEN_QUICK = MarketDef(
    name="generative-quick",
    learnwares=tuple(
        LearnwareDef(
            id=f"quick-gen-{sample.replace('_', '-')}",
            name=name,
            domain=domain,
            description=f"{name} (quick slice, generative, trained on a small sample).",
            data=(_quick_selection(sample, (0.4, 1.0), 9),),  # one optimizer step
            eval_fraction=0.1,
            prompt=_QUICK_PROMPT,
            training=_QUICK_TRAINING,
        )
        for sample, (domain, name, _) in _QUICK.items()
    ),
    tasks=tuple(
        TaskDef(
            id=f"quick-gen-{sample.replace('_', '-')}",
            domain=domain,
            description=f"{name} (quick slice)",
            data=(_quick_selection(sample, TASKS, 24),),
            right=(f"quick-gen-{sample.replace('_', '-')}",),
            prompt=_QUICK_PROMPT,
        )
        for sample, (domain, name, _) in _QUICK.items()
    ),
    licences={"tfns": LICENCES[TFNS], "medquad": LICENCES[MEDQUAD], "math_competition": LICENCES[MATH]},
    base_model=SMOLLM2,
)


def generalist_recipe(recipes: Sequence[Recipe], *, k: int = GENERALIST_K) -> Recipe:
    """One adapter of the learnwares' (median) rank on the union of their training records, for k
    times a median learnware's optimizer steps (one pass over a seeded sample of the union)."""
    first = recipes[0].training
    steps = sorted(math.ceil(len(r.train_texts) / r.training.batch_size) * r.training.epochs for r in recipes)
    rank = sorted(r.training.rank for r in recipes)[len(recipes) // 2]
    pairs = [(x, y) for r in recipes for x, y in zip(r.train_texts, r.train_labels, strict=True)]
    random.Random(0).shuffle(pairs)
    pairs = pairs[: k * steps[len(steps) // 2] * first.batch_size]
    return Recipe(
        card=Card(
            id="generalist",
            name="Generalist",
            domain="general",
            licence=" + ".join(sorted({r.card.licence for r in recipes})),
            publisher=PUBLISHER,
            description=f"One adapter on every learnware's training records ({k}x a learnware's steps).",
        ),
        labels=(),
        train_texts=tuple(x for x, _ in pairs),
        train_labels=tuple(y for _, y in pairs),
        eval_texts=recipes[0].eval_texts,
        eval_labels=recipes[0].eval_labels,
        training=dataclasses.replace(
            first, epochs=1, rank=rank, alpha=2 * rank, max_tokens=max(r.training.max_tokens for r in recipes)
        ),
        kind="generation",
        base_model=recipes[0].base_model,
        device=recipes[0].device,
        dtype=recipes[0].dtype,
    )
