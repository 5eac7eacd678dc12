"""The federated section of docs/results.md and its figure, from `federated_eval`'s results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lmdock.lab.federated_ident import METHODS
from lmdock.lab.results_doc import table

__all__ = ["FED_BEGIN", "FED_END", "federated_markdown", "training_rows", "write_federated_plot"]

FED_BEGIN = "<!-- lmdock-lab:federated:begin -->"
FED_END = "<!-- lmdock-lab:federated:end -->"
COMMAND = "lmdock-lab eval --federated --data ../shared/data"
COLUMNS = ("worst site alone", "mean site alone", "best site alone", "federated", "pooled")


def _privacy(epsilon: float | None) -> str:
    return "no DP" if epsilon is None else f"ε = {epsilon:g}"


def _stat(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)) if len(values) > 1 else 0.0}


def training_rows(federation: dict[str, Any], metric: str) -> dict[float | None, dict[str, dict[str, float]]]:
    """Per epsilon, each column's `metric` over the seeds (mean, sd): alone sites by rank."""
    out: dict[float | None, dict[str, dict[str, float]]] = {}
    epsilons = list(dict.fromkeys(run["epsilon"] for run in federation["runs"]))
    for eps in epsilons:
        runs = [r for r in federation["runs"] if r["epsilon"] == eps]
        alone = [sorted(a[metric] for a in r["alone"]) for r in runs]
        out[eps] = {
            "worst site alone": _stat([a[0] for a in alone]),
            "mean site alone": _stat([float(np.mean(a)) for a in alone]),
            "best site alone": _stat([a[-1] for a in alone]),
            "federated": _stat([r["federated"][metric] for r in runs]),
            "pooled": _stat([r["pooled"][metric] for r in runs]),
            **{
                f"site {j + 1} alone": _stat([r["alone"][j][metric] for r in runs])
                for j in range(federation["sites"])
            },
        }
    return out


def _pct(stat: dict[str, float], seeds: int) -> str:
    mean = f"{100 * stat['mean']:.1f}"
    return f"{mean} ± {100 * stat['sd']:.1f}" if seeds > 1 else mean


def _gains(epsilon: float | None, row: dict[str, dict[str, float]]) -> str:
    def diff(column: str) -> str:
        return f"{100 * (row['federated']['mean'] - row[column]['mean']):+.1f}"

    return (
        f"{_privacy(epsilon)}: federated {diff('best site alone')} points of accuracy against the best "
        f"site alone, {diff('worst site alone')} against the worst, {diff('pooled')} against pooled"
    )


def _training_section(training: dict[str, Any]) -> list[str]:
    s = training["settings"]
    seeds = len(s["seeds"])
    lines = []
    for federation in training["federations"]:
        k = federation["sites"]
        sites = [
            [f"site {j + 1}", str(n), ", ".join(f"{y} {c}" for y, c in hist.items())]
            for j, (n, hist) in enumerate(
                zip(federation["site_records"], federation["site_histograms"], strict=True)
            )
        ]
        acc, f1 = training_rows(federation, "accuracy"), training_rows(federation, "macro_f1")
        columns = [f"site {j + 1} alone" for j in range(k)] + ["federated", "pooled"]
        rows = [
            [_privacy(eps), *(f"{_pct(acc[eps][c], seeds)} / {_pct(f1[eps][c], seeds)}" for c in columns)]
            for eps in acc
        ]
        gains = [_gains(eps, acc[eps]) for eps in acc]
        lines += [
            f"**{k} sites**, Dirichlet(α = {s['alpha']:g}) label skew (seed {s['split_seed']}, each site "
            f"at least {s['min_site']} records):",
            "",
            table(["site", "records", "labels"], sites),
            "Held-out accuracy / macro-F1, %"
            + (f" (mean ± sd over {seeds} seeds)" if seeds > 1 else " (one seed)")
            + ":",
            "",
            table(["privacy (per site)", *columns], rows),
            "; ".join(gains) + ".",
            "",
        ]
    return lines


def _rate(cell: dict[str, Any], what: str) -> str:
    r = cell[what]
    return f"{100 * r['rate']:.1f} ± {100 * r['ci95']:.1f}"


def _search_section(search: dict[str, Any]) -> list[str]:
    s, cells = search["settings"], search["cells"]
    rows = [
        [m, *(f"{_rate(c[m], 'right_learnware')} ({_rate(c[m], 'right_domain')})" for c in cells)]
        for m in METHODS
    ]
    flower = search["flower"]
    n = "the whole task" if s["n"] is None else f"n = {s['n']}"
    sizes = search["task_records"]
    refused = sum(c["alone"]["refused"] for c in cells)
    return [
        f"**Search.** The classifier reference market's {search['learnwares']} learnwares, indexed by "
        f"their exact specs"
        + (f" (each summarising its first {s['learnware_cap']} training texts)" if s["learnware_cap"] else "")
        + f"; {search['tasks']} user tasks ({n}: {sizes['min']}–{sizes['max']} records, mean "
        f"{sizes['mean']:g}), dealt out in equal shares to {s['sites']} sites, {s['draws']} draws per "
        f"task and ε, δ = {s['delta']:g} per site. The secure sum relies on t = {s['shares']} of the "
        f"{s['sites']} sites' noise shares (SecAgg+'s threshold must stay below the number of sites). "
        "Top-1 right learnware (right domain), % ± the 95 % Wilson half-width, pooled over the tasks:",
        "",
        table(["spec", *(_privacy(c["epsilon"]) for c in cells)], rows),
        (
            f"{refused} site releases were refused by the release's own checks (fewer than 20 records, or σ "
            "over the profile's max_sigma) and count as wrong. "
            if refused
            else ""
        )
        + f"Check through Flower: one real `federate_search` (SecAgg+, each site embedding its own "
        f"file and booking its ledger) on task `{flower['task']}` at ε = {flower['epsilon']:g}, "
        f"{flower['records']} records from {flower['contributors']} sites: σ = {flower['sigma_flower']:.4g}, "
        f"the in-process plan's σ = {flower['sigma_in_process']:.4g}; the joint spec's RMS error per "
        f"coordinate around the exact mean is {flower['rms_over_sigma_flower']:.3f} σ through Flower "
        f"and {flower['rms_over_sigma_in_process']:.3f} σ in process (1 expected); its top-1 "
        f"`{flower['top1']}` is {'right' if flower['top1_right'] else 'wrong'}.",
        "",
    ]


def federated_markdown(results: dict[str, Any], *, plot: str) -> str:
    training, search = results["training"], results["search"]
    s = training["settings"]
    machine = results["machine"]
    eps = "{" + ", ".join(f"{e:g}" for e in s["epsilons"] if e is not None) + "}"
    lines = [
        "## Federated learnware and joint search on real data (issue 20)",
        "",
        f"`{COMMAND}` ({results['seconds'] / 60:.0f} min on {machine['before']['cpus']} shared cores, "
        f"load average {machine['before']['load_average'][0]:g} before and "
        f"{machine['after']['load_average'][0]:g} after). **Training.** `{training['dataset']}`: "
        f"{training['train_records']} training records (u ≥ 0.4) split among the sites, "
        f"{training['test_records']} held-out test records (u < 0.4; majority class "
        f"{100 * training['majority']:.1f} %), labels {', '.join(training['labels'])}. Every column "
        f"trains the DP linear probe of `lmdock build` on `{s['base_model']}` for "
        f"{s['rounds'] * s['local_epochs']} epochs in all (batch {s['batch_size']}, learning rate "
        f"{s['learning_rate']:g}, {s['max_tokens']} tokens); the federation runs {s['rounds']} FedAvg "
        f"rounds of {s['local_epochs']} local epochs through Flower (`lmdock.federated.apps`), each site "
        f"booking DP-SGD at the same ε per site as it would alone (ε ∈ {eps}, "
        f"δ = {s['delta']:g}); pooled is every record at one site under the same DP. Without DP the "
        "federation's sites run the lab's plain-SGD ClientApp (the real one has no non-DP mode).",
        "",
        *_training_section(training),
        *_search_section(search),
        f"![federated vs alone]({plot})",
        "",
    ]
    return "\n".join(lines)


def write_federated_plot(results: dict[str, Any], out_dir: Path) -> Path:
    """federated.png: accuracy by column and privacy (left), right-learnware rate by ε (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    federation = results["training"]["federations"][0]
    acc = training_rows(federation, "accuracy")
    cells = results["search"]["cells"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    width = 0.8 / len(COLUMNS)
    groups = list(acc)
    for i, column in enumerate(COLUMNS):
        left.bar(
            [j + i * width for j in range(len(groups))],
            [acc[e][column]["mean"] for e in groups],
            width,
            yerr=[acc[e][column]["sd"] for e in groups],
            label=column,
        )
    left.axhline(results["training"]["majority"], color="grey", lw=0.8, ls=":", label="majority class")
    left.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    left.set_xticklabels([_privacy(e) for e in groups])
    left.set_ylim(0, 1.25)  # room for the legend above the bars
    left.set_ylabel(f"held-out accuracy ({federation['sites']} sites)")
    left.legend(fontsize=6, loc="upper center", ncol=3)
    xs = [c["epsilon"] for c in cells]
    for method, style in zip(METHODS, ("o-", "s-", "^--", "o:", "s:"), strict=True):
        ys = [c[method]["right_learnware"]["rate"] for c in cells]
        err = [c[method]["right_learnware"]["ci95"] for c in cells]
        right.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=method, markersize=4)
    right.set_xscale("log")
    right.set_xticks(xs)
    right.set_xticklabels([f"{x:g}" for x in xs])
    right.minorticks_off()
    right.set_ylim(0, 1.05)
    right.set_xlabel("ε per site")
    right.set_ylabel("top-1 right learnware")
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out_dir / "federated.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
