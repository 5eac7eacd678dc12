"""The evaluation's PNG figures (matplotlib, headless, small files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_generative_plot", "write_plots"]

DPI = 90


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(
    ax: Any, xs: list[float], points: list[dict[str, Any]], rule: str, metric: str, label: str, style: str
) -> None:
    ys = [p["all"][rule][metric]["mean"] for p in points]
    sd = [p["all"][rule][metric]["std"] for p in points]
    ax.errorbar(xs, ys, yerr=sd, fmt=style, capsize=3, label=label, markersize=4)


def _privacy(
    plt: Any,
    points: list[dict[str, Any]],
    xs: list[float],
    ticks: list[str],
    xlabel: str,
    out: Path,
) -> None:
    ok = [(x, t, p) for x, t, p in zip(xs, ticks, points, strict=True) if "unavailable" not in p]
    xs, ticks, points = [x for x, _, _ in ok], [t for _, t, _ in ok], [p for _, _, p in ok]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    _curve(ax, xs, points, "labels", "ratio_to_oracle", "selected / oracle score (spec + labels)", "o-")
    _curve(ax, xs, points, "labels", "top1", "top-1 identification (spec + labels)", "s--")
    _curve(ax, xs, points, "spec_only", "top1", "top-1 identification (spec only)", "^:")
    ax.set_xscale("log")  # epsilon and n both span decades
    ax.set_xticks(xs)
    ax.set_xticklabels(ticks)
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def _reuse(plt: Any, results: dict[str, Any], out: Path) -> None:
    base, sel = results["reuse"]["baselines"], results["reuse"]["selection"]
    domains = list(base)
    bars = [
        ("base (zero-shot)", [base[d]["base"] for d in domains]),
        ("random learnware", [base[d]["random"] for d in domains]),
        ("best single", [base[d]["best_single"] for d in domains]),
        ("LoraRetriever-style (no DP)", [base[d]["retriever"] for d in domains]),
        ("selected (ε=1)", [sel[d]["labels"]["selected"]["mean"] for d in domains]),
        ("oracle", [base[d]["oracle"] for d in domains]),
    ]
    _bars(plt, domains, bars, "accuracy", out)


def _bars(plt: Any, domains: list[str], bars: list[tuple[str, list[float]]], ylabel: str, out: Path) -> None:
    """One group of bars per domain, one bar per column."""
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    width = 0.8 / len(bars)
    for i, (name, values) in enumerate(bars):
        ax.bar([j + i * width for j in range(len(domains))], values, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(domains))])
    ax.set_xticklabels(domains)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """privacy_epsilon.png, privacy_size.png and reuse.png in `out_dir`."""
    plt = _pyplot()
    eps_points = results["privacy"]["epsilon"]
    finite = [p["epsilon"] for p in eps_points if p["epsilon"] is not None]
    top = max(finite) * 2 if finite else 1.0
    xs = [p["epsilon"] if p["epsilon"] is not None else top for p in eps_points]
    ticks = [f"{p['epsilon']:g}" if p["epsilon"] is not None else "∞" for p in eps_points]
    paths = [out_dir / "privacy_epsilon.png", out_dir / "privacy_size.png", out_dir / "reuse.png"]
    _privacy(plt, eps_points, xs, ticks, "ε (δ = 1e-6, whole task)", paths[0])
    size_points = results["privacy"]["size"]
    ns = [float(p["n"]) for p in size_points]
    _privacy(
        plt,
        size_points,
        ns,
        [str(p["n"]) for p in size_points],
        "task size n (ε = 1, δ = 1e-6)",
        paths[1],
    )
    _reuse(plt, results, paths[2])
    return paths


def write_generative_plot(results: dict[str, Any], out_dir: Path, names: dict[str, str]) -> Path:
    """generative.png: the generative market's domain averages, one bar per column."""
    summary = results["summary"]
    domains = list(summary["domains"])
    bars = [(names[c], [summary["domains"][d][c] for d in domains]) for c in summary["columns"]]
    path = out_dir / "generative.png"
    _bars(_pyplot(), domains, bars, "accuracy or gold-answer token probability", path)
    return path
