"""Extrapolate the generative market's CPU budget from a measured partial run.

    python benchmarks/gen_budget.py RESULTS_DIR [--data ../shared/data]

RESULTS_DIR is what `lmdock-lab eval --generative --learnwares ... --tasks ...` wrote. The cost
of training is proportional to the tokens trained on (records x epochs x (prompt + answer)),
and of scoring to the tokens read: the lower layers once per question, the upper layers once
per question and model. This counts those tokens for the measured subset and for the whole
catalogue with the real tokenizer, turns the run's seconds into seconds per token, and prints
one JSON object: the measured rates and the full market's estimate for its two costs that
grow with the market (packaging, publishing and searches take seconds in all).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from lmdock.client.models import quiet_model_libraries, resolve_base_model
from lmdock.client.prompts import answer_ids, prompt_ids
from lmdock.lab.building import Recipe
from lmdock.lab.definitions import UserTask, materialize
from lmdock.lab.gen_eval import GEN_FULL_SETTINGS, subset
from lmdock.lab.gen_market import GEN_FULL, generalist_recipe
from lmdock.lab.gen_scoring import GOLD_TOKENS
from lmdock.lab.loglik import choice_questions, gold_questions
from transformers import AutoTokenizer


def train_tokens(tokenizer: Any, recipe: Recipe) -> int:
    cap = recipe.training.max_tokens
    per_epoch = sum(
        len(prompt_ids(tokenizer, x, max_tokens=cap)) + len(answer_ids(tokenizer, y)[:cap]) + 1
        for x, y in zip(recipe.train_texts, recipe.train_labels, strict=True)
    )
    return per_epoch * recipe.training.epochs


def question_tokens(tokenizer: Any, task: UserTask, examples: int) -> int:
    n = min(examples, len(task.prompts))
    prompts = [prompt_ids(tokenizer, p, max_tokens=task.prompt_tokens) for p in task.prompts[:n]]
    if task.choices:
        questions = choice_questions(prompts, [answer_ids(tokenizer, c) for c in task.choices])
    else:
        questions = gold_questions(prompts, [answer_ids(tokenizer, g)[:GOLD_TOKENS] for g in task.labels[:n]])
    return sum(len(q.ids) for q in questions)


def counts(
    tokenizer: Any, data: Path, learnwares: tuple[str, ...], tasks: tuple[str, ...], examples: int
) -> dict[str, Any]:
    market = materialize(subset(GEN_FULL, learnwares, tasks), data)
    recipes = [*market.recipes, generalist_recipe(market.recipes)]
    return {
        "learnwares": len(market.recipes),
        "train_tokens": sum(train_tokens(tokenizer, r) for r in recipes),
        "question_tokens": sum(question_tokens(tokenizer, t, examples) for t in market.tasks),
        "models": len(recipes) + 1,  # learnwares, the generalist and the base
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    quiet_model_libraries()
    run = json.loads((args.results / "market.json").read_text(encoding="utf-8"))
    settings, laps = run["settings"], {lap["step"]: lap["seconds"] for lap in run["timings"]}
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(run["base_model"]))
    tokenizer.truncation_side = "left"  # as training and scoring cut prompts
    measured = counts(
        tokenizer, args.data, tuple(settings["learnwares"]), tuple(settings["tasks"]), settings["examples"]
    )
    full = counts(tokenizer, args.data, (), (), GEN_FULL_SETTINGS.examples)
    train_seconds = sum(m["train_seconds"] for m in run["market"])
    rate = {
        "train_seconds_per_1k_tokens": 1000 * train_seconds / measured["train_tokens"],
        "lower_seconds_per_1k_tokens": 1000 * laps["scores:lower"] / measured["question_tokens"],
        "upper_seconds_per_1k_tokens_and_model": 1000
        * laps["scores:upper"]
        / (measured["question_tokens"] * measured["models"]),
    }
    estimate = {
        "train": rate["train_seconds_per_1k_tokens"] * full["train_tokens"] / 1000,
        "score_lower": rate["lower_seconds_per_1k_tokens"] * full["question_tokens"] / 1000,
        "score_upper": rate["upper_seconds_per_1k_tokens_and_model"]
        * full["question_tokens"]
        * full["models"]
        / 1000,
    }
    print(
        json.dumps(
            {
                "measured": measured | {"seconds": laps, "train_seconds": round(train_seconds, 1)},
                "rates": {k: round(v, 3) for k, v in rate.items()},
                "full": full,
                "estimate_seconds": {k: round(v) for k, v in estimate.items()}
                | {"total": round(sum(estimate.values()))},
                "train_seconds_median_per_learnware_measured": statistics.median(
                    m["train_seconds"] for m in run["market"][:-1]
                ),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
