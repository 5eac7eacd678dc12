"""The generative lab's scoring on 1 torch thread against N: is one process's second core worth it?

`lmdock-lab eval --generative --jobs N` builds N learnwares at a time, one torch thread each;
scoring is one process, and it now takes N threads (`lab/gen_eval.py`). This times the scoring
step that dominates the full run (docs/performance.md: the upper layers, per question and model)
through the lab's own code (`SplitModel` over `choice_questions`, BANKING77-like packed choices
and open answers), the packaged SmolLM2-135M-Instruct split at layer 22 as the catalogue's
top-8 LoRA splits it, alternating 1 and N threads `--repeats` times (best of each), and prints one
JSON object with the ratio against 1 thread in the same run:

    python benchmarks/scoring_threads.py [--threads 2] [--repeats 3] [--questions 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import torch
from lmdock.client.models import quiet_model_libraries
from lmdock.client.prompts import answer_ids, prompt_ids
from lmdock.client.runtime import SharedBase
from lmdock.common.base_model_files import SMOLLM2
from lmdock.lab.gen_scoring import BATCH_TOKENS
from lmdock.lab.loglik import SplitModel, batches, choice_questions, gold_questions

SPLIT = 22  # 30 layers, LoRA on the top 8 (lab/gen_market.py)
CARD_INTENTS = ["card arrival", "card linking", "card not working", "lost or stolen card", "card payment fee"]


def _questions(tokenizer: Any, n: int) -> list[Any]:
    prompt = (
        "I ordered a new debit card two weeks ago and it has still not arrived; the app says it was "
        "dispatched. What should I do, and which of these topics is my question about?"
    )
    prompts = [prompt_ids(tokenizer, f"{prompt} (case {i})", max_tokens=192) for i in range(n)]
    golds = [answer_ids(tokenizer, "Contact support and ask them to cancel the card and send another.")] * n
    choices = [answer_ids(tokenizer, c) for c in CARD_INTENTS]
    return choice_questions(prompts, choices) + gold_questions(prompts, golds)


def _upper_seconds(model: Any, questions: list[Any], pad: int) -> float:
    split = SplitModel(model, SPLIT, pad_id=pad)
    lowers = [split.lower(b) for b in batches(questions, tokens=BATCH_TOKENS)]
    started = time.perf_counter()
    for lower in lowers:
        split.upper(lower)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--questions", type=int, default=16)
    args = parser.parse_args()
    quiet_model_libraries()
    host = SharedBase(SMOLLM2, kind="generation", device="cpu", dtype="float32")
    pad = host.tokenizer.pad_token_id
    questions = _questions(host.tokenizer, args.questions)
    tokens = sum(len(q.ids) for q in questions)
    best = {1: float("inf"), args.threads: float("inf")}
    with host.selected(None) as model:
        for _ in range(args.repeats):
            for threads in best:
                torch.set_num_threads(threads)
                best[threads] = min(best[threads], _upper_seconds(model, questions, pad))
    print(
        json.dumps(
            {
                "benchmark": "scoring_threads",
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_1m": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(),
                },
                "tokens": tokens,
                "upper_seconds": {str(k): round(v, 3) for k, v in best.items()},
                "upper_tokens_per_s": {str(k): round(tokens / v, 1) for k, v in best.items()},
                "speedup_vs_1_thread": round(best[1] / best[args.threads], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
