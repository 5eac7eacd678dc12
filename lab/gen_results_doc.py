"""The generative market's section of docs/results.md, from `gen_eval`'s results data."""

from __future__ import annotations

from typing import Any

from lmdock.lab.gen_metrics import COLUMNS, shortfall
from lmdock.lab.results_doc import table

__all__ = [
    "GEN_BEGIN",
    "GEN_END",
    "GEN_README_BEGIN",
    "GEN_README_END",
    "NAMES",
    "generative_headline",
    "generative_markdown",
    "partial_run",
]

GEN_BEGIN = "<!-- lmdock-lab:generative:begin -->"
GEN_END = "<!-- lmdock-lab:generative:end -->"
GEN_README_BEGIN = "<!-- lmdock-lab:generative-headline:begin -->"
GEN_README_END = "<!-- lmdock-lab:generative-headline:end -->"
COMMAND = "nice -n 10 lmdock-lab eval --generative --data ../shared/data --jobs 2"

NAMES = {
    "base": "base",
    "random": "random learnware",
    "selected": "selected, ε = 1",
    "selected_no_dp": "selected, no DP",
    "oracle": "oracle",
    "generalist": "generalist",
    "mixture": "mixture (ε = 1)",
}


def _p(x: float) -> str:
    return f"{100 * x:.1f}"


def _domain_rows(domains: dict[str, Any], columns: list[str]) -> list[list[str]]:
    rows = []
    for group, d in domains.items():
        ratio = d["selected"] / d["oracle"] if d.get("oracle") else float("nan")
        cells = [_p(d[c]) if c in d else "–" for c in columns]
        rows.append(
            [f"**{group}**" if group == "all" else group, str(d["tasks"]), *cells, f"{100 * ratio:.1f}%"]
        )
    return rows


def _by_share(pick: tuple[str, float]) -> tuple[float, str]:
    return -pick[1], pick[0]


def _task_rows(summary: dict[str, Any], columns: list[str]) -> list[list[str]]:
    rows = []
    for r in summary["per_task"]:
        v, ci = r["values"], r["ci"]
        cells = [f"{_p(v[c])} ± {_p(ci[c])}" if c == "selected" else _p(v[c]) for c in columns]
        rows.append(
            [
                r["task"],
                "acc." if r["metric"] == "accuracy" else "gold p",
                str(r["n"]),
                "yes" if r["one_pass"] else "no",
                *cells,
                r["oracle_id"],
                ", ".join(f"{lw} {100 * s:.0f}%" for lw, s in sorted(r["picks"].items(), key=_by_share)),
                "yes" if r["informative"] else "no",
            ]
        )
    return rows


def _targets(summary: dict[str, Any]) -> str:
    informative = summary["informative_domains"]
    if not informative:
        return "No task's oracle beats the base beyond its 95% interval here: the targets are not checked.\n"
    domains = [d for d in informative if d != "all"]
    ratio_ok = [d for d in domains if informative[d]["selected"] >= 0.98 * informative[d]["oracle"]]
    base_ok = [d for d in domains if informative[d]["selected"] > informative[d]["base"]]
    rows = [r for r in summary["per_task"] if r["informative"]]
    ahead = sum(r["values"]["selected"] > r["values"]["generalist"] for r in rows)

    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    return (
        f"Targets on the {len(rows)} informative tasks (oracle above base beyond the 95% interval): "
        f"selected ≥ 98% of oracle in every domain — {len(ratio_ok)} of {len(domains)}, "
        f"{mark(len(ratio_ok) == len(domains))}; above base in every domain — {len(base_ok)} of "
        f"{len(domains)}, {mark(len(base_ok) == len(domains))}; "
        f"ahead of the generalist in at least half of the tasks — {ahead} of {len(rows)}, "
        f"{mark(2 * ahead >= len(rows))}.\n"
    )


def _shortfall(results: dict[str, Any]) -> str:
    """Where the ε = 1 selection loses against the oracle, and where its lost picks went."""
    rows = []
    for r in results["summary"]["per_task"]:
        if not r["informative"]:
            continue
        f = shortfall(r, results["scores"]["per_example"][r["task"]])
        if f["gap"] <= 0.0005:
            continue
        rows.append(
            [
                r["task"],
                _p(f["gap"]),
                _p(max(f["gap_no_dp"], 0.0)),  # the oracle is the best: below 0 is rounding
                f"{100 * f['outside_share']:.0f}%",
                _p(f["outside"]),
                _p(f["versions"]),
            ]
        )
    if not rows:
        return ""
    informative = [r for r in results["summary"]["per_task"] if r["informative"]]
    exact = sum(r["exact_pick"] == r["oracle_id"] for r in informative)
    return "\n".join(
        [
            "### Where selection loses against the oracle (informative tasks)\n",
            table(
                [
                    "task",
                    "oracle − selected, ε = 1",
                    "oracle − selected, no DP",
                    "ε = 1 picks outside the task's data set",
                    "points lost to them",
                    "points lost to other versions of its data set",
                ],
                rows,
            ),
            WHY.format(exact=exact, tasks=len(informative)),
        ]
    )


def _seconds_total(results: dict[str, Any]) -> float:
    return sum(lap["seconds"] for lap in results["timings"] if ":" not in lap["step"])


def generative_headline(results: dict[str, Any], *, plot: str) -> str:
    """The README's generative block: informative domain averages, the targets, how to regenerate."""
    summary = results["summary"]
    columns = summary["columns"]
    wtl = summary["wtl"]
    return "\n".join(
        [
            f"Score (%) on the held-out user tasks where the oracle beats the base beyond its 95% "
            f"interval ({len(results['market']) - 1} SmolLM2-135M-Instruct + LoRA learnwares; "
            "accuracy on label and multiple-choice tasks, gold-answer token probability on open and "
            f"math answers; selected, ε = 1: mean of {results['settings']['repeats']} private searches):\n",
            table(
                ["domain", "tasks", *[NAMES[c] for c in columns], "selected / oracle"],
                _domain_rows(summary["informative_domains"], columns),
            )
            if summary["informative_domains"]
            else "No task's oracle beats the base beyond its interval in this run.\n",
            _targets(summary),
            "Selected (ε = 1) per task, win / tie / loss: "
            + "; ".join(
                f"against the {NAMES[c]} {wtl[c]['win']} / {wtl[c]['tie']} / {wtl[c]['loss']}"
                for c in ("generalist", "base")
                if c in wtl
            )
            + ".\n",
            f"![generative market, domain averages]({plot})\n",
            f"Regenerate with `{COMMAND}` ({_seconds_total(results) / 3600:.1f} h on 2 CPU cores from an "
            "empty cache: "
            + ", ".join(
                f"{lap['step'].replace('_', ' ')} {lap['seconds'] / 60:.0f} min"
                for lap in results["timings"]
                if ":" not in lap["step"] and lap["seconds"] >= 60
            )
            + "). Every column, per-task tables, where selection falls short and why: "
            "[docs/results.md](docs/results.md#generative-market-smollm2-135m-instruct--lora-learnwares).\n",
        ]
    )


def partial_run(settings: dict[str, Any]) -> bool:
    """A quick run, or one over a subset of the catalogue: its figures do not test the claim."""
    return bool(settings["quick"] or settings["learnwares"] or settings["tasks"])


def _partial(results: dict[str, Any]) -> str:
    s = results["settings"]
    if not partial_run(s):
        return ""
    what = (
        "the quick CI slice on the shipped samples (tiny learnwares: it checks the harness, not the claim)"
        if s["quick"]
        else f"{len(results['market']) - 1} learnwares and {len(results['tasks'])} tasks of the catalogue"
    )
    return f"**Partial run** — {what}; the full market's figures replace these when `{COMMAND}` has run.\n"


def _seconds(results: dict[str, Any]) -> str:
    return ", ".join(f"{lap['step'].replace('_', ' ')} {lap['seconds']:.0f} s" for lap in results["timings"])


def generative_markdown(results: dict[str, Any], *, plot: str) -> str:
    """The section, between GEN_BEGIN and GEN_END."""
    summary = results["summary"]
    columns = summary["columns"]
    head = [NAMES[c] for c in columns]
    g = results["generalist"]
    market_rows = [
        [
            m["id"],
            m["domain"],
            ", ".join(m["datasets"]),
            str(m["train_records"]),
            str(m["rank"]),
            f"{m['learning_rate']:g}",
            f"top {m['layers']}" if m["layers"] else "all",
            str(m["max_tokens"]),
            f"{m['train_loss']:.3f}",
            f"{m['train_seconds']:.0f}",
        ]
        for m in results["market"]
    ]
    task_rows = [
        [
            t["id"],
            t["domain"],
            str(t["texts"]),
            str(len(t["choices"])) if t["choices"] else "open",
            str(t["prompt_tokens"]),
        ]
        for t in results["tasks"]
    ]
    parts = [
        "## Generative market: SmolLM2-135M-Instruct + LoRA learnwares\n",
        "Generated by `lmdock-lab eval --generative` (results/generative/*.json); edit "
        "`lab/gen_results_doc.py`. "
        f"Base `{results['base_model']}`, spec profile `{results['profile_id']}`.\n",
        _partial(results),
        "### Domain averages (all tasks)\n",
        table(["domain", "tasks", *head, "selected / oracle"], _domain_rows(summary["domains"], columns)),
        f"![generative market, domain averages]({plot})\n",
        "### Informative tasks (oracle above base beyond the 95% interval)\n",
        table(
            ["domain", "tasks", *head, "selected / oracle"],
            _domain_rows(summary["informative_domains"], columns),
        )
        if summary["informative_domains"]
        else "none in this run\n",
        _targets(summary),
        _shortfall(results),
        "### Win / tie / loss of the selected learnware (ε = 1) against each column\n",
        table(
            ["against", "win", "tie", "loss"],
            [
                [NAMES[c], str(w["win"]), str(w["tie"]), str(w["loss"])]
                for c in COLUMNS
                if (w := summary["wtl"].get(c))
            ],
        ),
        "A win (loss): the paired per-example difference's 95% interval lies above (below) 0; else a tie.\n",
        "### Per task\n",
        table(
            ["task", "metric", "n", "one pass", *head, "oracle", "picks at ε = 1", "informative"],
            _task_rows(summary, columns),
        ),
        "*selected, ε = 1* is a mean over "
        f"{results['settings']['repeats']} private searches; ± is its 95% interval over the examples.\n",
        "### Method\n",
        METHOD.format(k=g["k"], records=g["records"], steps=g["steps"], rank=g["rank"]),
        "Tasks (texts feed the spec; the first "
        f"{results['settings']['examples']} are scored) and their prompt caps in tokens:\n",
        table(["task", "domain", "texts", "choices", "prompt cap"], task_rows),
        "Learnwares (and the generalist):\n",
        table(
            [
                "id",
                "domain",
                "data",
                "train",
                "r",
                "lr",
                "LoRA layers",
                "max tokens",
                "train loss",
                "train s",
            ],
            market_rows,
        ),
        f"Phases of this run (seconds, 2 shared CPU cores): {_seconds(results)}.\n",
    ]
    return "\n".join(p for p in parts if p)


WHY = """\
Why. The ranking itself knows where each task belongs: without DP the exact spec picks the oracle
on {exact} of these {tasks} tasks. The ε = 1 shortfall comes from the private release. A user task
here sends the spec of its scored texts only (100, or 60 for open answers; the classifier market's
tasks send up to 300), and the noise of an ε = 1 kernel-mean release scales as 1/n (its
sensitivity is 2R/b plus a small grid term, b ≤ n the size bucket; docs/privacy.md): with a third
of the texts it is about three times larger, and a share of private
searches lands nearer another data set's learnware (the fourth column). Versions of one data set
hold near-identical specs (a spec describes the data, not how well a version learnt it), so
between them the pick is closer to a draw; that costs less. A user closes the gap with a spec of
more of its task (measured below: benchmarks/gen_reselection.py) or a larger ε, at the price the
ledger states (docs/privacy.md).
"""

METHOD = """\
* **Models.** Every learnware is SmolLM2-135M-Instruct + a LoRA adapter on q/v of the top layers
  only, trained on instruction -> answer pairs through the chat template, loss on the answer tokens
  (`lmdock build`'s generative path). Classification data sets answer with their label words; QA
  sets with their answers; math learnwares train on the worked solutions (`meta.solution`).
  Versions of one data set differ in u-range, size, rank and learning rate.
* **Split.** The classifier lab's: user tasks at u < 0.4 of each data set, learnwares at u ≥ 0.4;
  the build refuses a task that shares a record (id or text) with any learnware's data.
* **Scoring** (lm-evaluation-harness conventions, `lab/loglik.py`). Closed answer sets (labels,
  yes/no/maybe, AQuA-RAT's letters): the choice with the highest log-likelihood after the prompt,
  accuracy, from ONE forward pass per example ("one pass" in the table): where every choice is a
  single token, the next-token distribution over the choices; else the prompt followed by every
  choice, each choice attending to the prompt and its own tokens only, summed over its tokens
  (equal to one sequence per choice, the prompt run once). Open answers (TAT-QA, COVID-QA, MedQuAD
  answers) and math (GSM8K, MATH): *gold p*, the gold continuation's token probability exp(mean
  log p) over its first 64 tokens, teacher-forced; for math the continuation is the worked
  solution ending in the final answer (exact match on the final number is near zero at 135M).
  Columns average different metrics, so read domain averages within a domain.
* **CPU engineering.** LoRA on the top layers only: the frozen lower layers run once per scored
  batch and their activations serve the base and every adapter (`SplitModel`), so k adapters cost
  lower + k·upper; in training, each record's lower activations are kept after its first epoch,
  so later epochs run the top layers alone; a multi-token choice set is one packed sequence per
  example (the prompt, then every choice attending to the prompt and itself only); the vocabulary
  projection runs only at the positions read; prompts are cut per data set (the prompt cap above;
  a long context is cut at its end, keeping the question). The measured budget and what
  dominates it: docs/performance.md.
* **Generalist.** One adapter of rank {rank} on a seeded sample of the union of every learnware's
  training records, {records} records in one pass = {steps} optimizer steps, k = {k} times a median
  learnware's steps: the CPU-scale stand-in for a general-purpose model.
* **Mixture.** The market's mixture weights for one ε = 1 spec of the task; its score is
  Σ w_l · score_l, the expected score when each example goes to a component drawn by weight.
"""
