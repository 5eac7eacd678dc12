"""The task-vector section of docs/results.md and its figure, from `task_vector_eval`'s results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmdock.lab.results_doc import table

__all__ = ["TV_BEGIN", "TV_END", "task_vector_markdown", "write_task_vector_plot"]

TV_BEGIN = "<!-- lmdock-lab:task-vector:begin -->"
TV_END = "<!-- lmdock-lab:task-vector:end -->"
COMMAND = "nice -n 10 lmdock-lab eval --task-vector --data ../shared/data"


def _eps(value: float | None) -> str:
    return "no noise" if value is None else f"ε = {value:g}"


def _cell(cell: dict[str, Any]) -> str:
    if cell["right"] is None:
        return "–"
    return f"{100 * cell['right']:.1f} ± {100 * cell['ci95']:.1f}"


def task_vector_markdown(results: dict[str, Any], *, plot: str) -> str:
    settings, pooled = results["settings"], results["pooled"]
    sizes = settings["sizes"]
    rows = []
    for method in dict.fromkeys(c["method"] for c in pooled):
        for eps in settings["epsilons"]:
            by_n = {c["n"]: c for c in pooled if c["method"] == method and c["epsilon"] == eps}
            rows.append([method, _eps(eps), *(_cell(by_n[n]) for n in sizes)])
    tv = results["task_vector_profile"]
    wire = results["wire_bytes"]
    seconds = results["seconds"]
    lines = [
        "## Kernel mean vs task vector (issue 22)",
        "",
        f"`{COMMAND}`: leave one data set out on the generative reference market's "
        f"{len(results['learnwares'])} learnwares (the identification protocol above: the fold's "
        "specialists hidden, mixtures kept; a search is right when its top-1's domain is the fold's), "
        f"{settings['draws']} draws per fold and cell, δ = {settings['delta']:g}; each learnware's vectors "
        f"summarise its first {settings['learnware_cap']} texts; pools of at most {settings['pool_cap']} "
        "user records. **both** spends ε/2 and δ/2 on each spec and fuses the two rankings by reciprocal "
        "rank. Right-domain rate of the top-1, % ± the 95 % Wilson half-width:",
        "",
        table(["spec", "privacy", *(f"n = {n}" for n in sizes)], rows),
        f"![right domain by ε]({plot})",
        "",
        f"Task-vector profile `{tv['profile_id']}`: LoRA r = {tv['rank']} on "
        f"{', '.join(tv['targets'])} of the top {tv['layers']} layers of `{tv['base_model']}`, "
        f"{tv['steps']} full-batch step(s), clip "
        f"C = {tv['clip_norm']:g}, the first {tv['max_tokens']} tokens of each text. On the wire: "
        f"{wire['kernel mean']:,} bytes for a kernel mean, {wire['task vector']:,} for a task vector. "
        f"This run took {seconds['all']:.0f} s, {seconds['gradients']:.0f} s of it for the gradient rows of "
        f"{seconds['texts']:,} texts (computed once, then read back from disk by content: "
        "`--workdir`/embeddings).",
        "",
    ]
    return "\n".join(lines)


def write_task_vector_plot(results: dict[str, Any], out_dir: Path) -> Path:
    """task-vector.png: right-domain rate against ε at the middle n, one line per spec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings, pooled = results["settings"], results["pooled"]
    n = settings["sizes"][len(settings["sizes"]) // 2]
    finite = sorted(e for e in settings["epsilons"] if e is not None)
    ticks = [*finite, 2 * finite[-1]] if finite else [1.0]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for method, style in zip(dict.fromkeys(c["method"] for c in pooled), ("o-", "s--", "^:"), strict=False):
        by_eps = {c["epsilon"]: c for c in pooled if c["method"] == method and c["n"] == n}
        xs = [e for e in [*finite, None] if e in by_eps and by_eps[e]["right"] is not None]
        ys = [by_eps[e]["right"] for e in xs]
        err = [by_eps[e]["ci95"] for e in xs]
        ax.errorbar(
            [ticks[-1] if e is None else e for e in xs], ys, yerr=err, fmt=style, capsize=3, label=method
        )
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([*(f"{e:g}" for e in finite), "no noise"][: len(ticks)])
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"ε (n = {n})")
    ax.set_ylabel("top-1 right domain")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out_dir / "task-vector.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
