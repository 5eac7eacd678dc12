"""Writing the evaluation out: results/*.json, PNG plots, docs/results.md and the README table."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmdock.client.files import atomic_write_text
from lmdock.common.errors import FailedPrecondition
from lmdock.lab.federated_doc import FED_BEGIN, FED_END, federated_markdown, write_federated_plot
from lmdock.lab.gen_results_doc import (
    GEN_BEGIN,
    GEN_END,
    GEN_README_BEGIN,
    GEN_README_END,
    NAMES,
    generative_headline,
    generative_markdown,
    partial_run,
)
from lmdock.lab.ident_doc import IDENT_BEGIN, IDENT_END, identification_markdown
from lmdock.lab.plots import write_generative_plot, write_plots
from lmdock.lab.results_doc import headline_table, results_markdown
from lmdock.lab.task_vector_doc import TV_BEGIN, TV_END, task_vector_markdown, write_task_vector_plot

__all__ = [
    "README_BEGIN",
    "README_END",
    "load_generative_results",
    "load_results",
    "render",
    "render_generative",
    "update_readme",
    "write_federated_report",
    "write_generative_report",
    "write_identification_report",
    "write_report",
]

README_BEGIN = "<!-- lmdock-lab:headline:begin -->"
README_END = "<!-- lmdock-lab:headline:end -->"

#: The report is the repository's, for everyone to read (client state is owner-only).
PUBLISHED = 0o644


def _json(path: Path, data: Any) -> None:
    atomic_write_text(
        path, json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", mode=PUBLISHED
    )


def _rounded(scores: dict[str, Any]) -> dict[str, Any]:
    out = dict(scores)
    out["learnware"] = {
        t: {lw: round(v, 4) for lw, v in row.items() if v} for t, row in scores["learnware"].items()
    }
    out["base"] = {t: round(v, 4) for t, v in scores["base"].items()}
    out["run_seconds"] = len(scores["run_seconds"])  # how many runs; the median is in cost.json
    return out


def update_readme(readme: Path, block: str, *, begin: str = README_BEGIN, end: str = README_END) -> bool:
    """Replace the text between the markers with `block`; False when there are no markers."""
    text = readme.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(readme, f"{head}{begin}\n{block}{end}{tail}", mode=PUBLISHED)
    return True


def _kept_blocks(docs: Path) -> str:
    """The generative, identification, task-vector and federated sections already in `docs`
    (markers included), kept
    when the rest is rewritten."""
    text = docs.read_text(encoding="utf-8") if docs.is_file() else ""
    kept = ""
    for begin, end in (
        (GEN_BEGIN, GEN_END),
        (IDENT_BEGIN, IDENT_END),
        (TV_BEGIN, TV_END),
        (FED_BEGIN, FED_END),
    ):
        if begin in text and end in text:
            kept += begin + text.split(begin, 1)[1].split(end, 1)[0] + end + "\n"
    return kept


def _section(docs: Path, block: str, begin: str, end: str) -> None:
    """Put `block` between the markers in `docs`, appending them when absent."""
    if not (docs.is_file() and update_readme(docs, block, begin=begin, end=end)):
        before = docs.read_text(encoding="utf-8").rstrip() + "\n\n" if docs.is_file() else ""
        atomic_write_text(docs, f"{before}{begin}\n{block}{end}\n", mode=PUBLISHED)


def write_generative_report(
    results: dict[str, Any], out_dir: Path, *, docs: Path | None, readme: Path | None = None
) -> list[Path]:
    """results/generative/*.json, its figure, its section of `docs` (appended when absent) and,
    for a full run, the README's generative block."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "market.json": {k: v for k, v in results.items() if k not in ("scores", "summary")},
        "scores.json": results["scores"],
        "summary.json": results["summary"],
    }
    for name, data in files.items():
        _json(out_dir / name, data)
    return [out_dir / name for name in files] + render_generative(results, out_dir, docs=docs, readme=readme)


def _read_result(out_dir: Path, name: str, command: str) -> Any:
    """`out_dir`/`name`.json, or FailedPrecondition naming the `command` that writes it."""
    path = out_dir / f"{name}.json"
    if not path.is_file():
        raise FailedPrecondition(f"{path} is missing: run `{command}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def load_generative_results(out_dir: Path) -> dict[str, Any]:
    """The generative results as `write_generative_report` wrote them."""

    def read(name: str) -> Any:
        return _read_result(out_dir, name, "lmdock-lab eval --generative")

    return read("market") | {"scores": read("scores"), "summary": read("summary")}


def render_generative(
    results: dict[str, Any], out_dir: Path, *, docs: Path | None, readme: Path | None
) -> list[Path]:
    """The generative figure, its docs section and (full runs only) the README block."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_generative_plot(results, out_dir, NAMES)]
    if docs is not None:
        block = generative_markdown(results, plot=os.path.relpath(out_dir / "generative.png", docs.parent))
        _section(docs, block, GEN_BEGIN, GEN_END)
        written.append(docs)
    if readme is not None and not partial_run(results["settings"]):
        block = generative_headline(results, plot=os.path.relpath(out_dir / "generative.png", readme.parent))
        if update_readme(readme, block, begin=GEN_README_BEGIN, end=GEN_README_END):
            written.append(readme)
    return written


def _write_one_section(
    results: dict[str, Any],
    out_dir: Path,
    docs: Path | None,
    *,
    name: str,
    plot: Callable[[dict[str, Any], Path], Path],
    markdown: Callable[..., str],
    markers: tuple[str, str],
) -> list[Path]:
    """OUT/NAME.json, its figure OUT/NAME.png, and its section of `docs` (appended when absent)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _json(out_dir / f"{name}.json", results)
    written = [out_dir / f"{name}.json", plot(results, out_dir)]
    if docs is not None:
        figure = os.path.relpath(out_dir / f"{name}.png", docs.parent)
        _section(docs, markdown(results, plot=figure), *markers)
        written.append(docs)
    return written


def write_task_vector_report(results: dict[str, Any], out_dir: Path, *, docs: Path | None) -> list[Path]:
    """OUT/task-vector.json, its figure, and the task-vector section of `docs` (appended when absent)."""
    return _write_one_section(
        results,
        out_dir,
        docs,
        name="task-vector",
        plot=write_task_vector_plot,
        markdown=task_vector_markdown,
        markers=(TV_BEGIN, TV_END),
    )


def write_federated_report(results: dict[str, Any], out_dir: Path, *, docs: Path | None) -> list[Path]:
    """OUT/federated.json, its figure, and the federated section of `docs` (appended when absent)."""
    return _write_one_section(
        results,
        out_dir,
        docs,
        name="federated",
        plot=write_federated_plot,
        markdown=federated_markdown,
        markers=(FED_BEGIN, FED_END),
    )


def write_identification_report(results: dict[str, Any], out_dir: Path, *, docs: Path | None) -> list[Path]:
    """OUT/loo.json and the identification section of `docs` (appended when absent)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _json(out_dir / "loo.json", results)
    written = [out_dir / "loo.json"]
    if docs is not None:
        _section(docs, identification_markdown(results), IDENT_BEGIN, IDENT_END)
        written.append(docs)
    return written


def write_report(
    results: dict[str, Any], out_dir: Path, *, docs: Path | None, readme: Path | None
) -> list[Path]:
    """Write every output; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "market.json": {
            k: results[k]
            for k in ("settings", "profile", "market", "tasks", "licences", "seconds", "timings")
        },
        "scores.json": _rounded(results["scores"]),
        "reuse.json": {
            "baselines": results["reuse"]["baselines"],
            "selection": results["reuse"]["selection"],
            "per_task": results["per_task"],
        },
        "identification.json": {
            group: {
                rule: {k: entry[rule][k] for k in ("top1", "top3", "ties")}
                for rule in ("labels", "spec_only")
            }
            | {
                "retriever_top1": results["reuse"]["baselines"][group]["retriever_top1"],
                "retriever_top1_spec_only": results["reuse"]["baselines"][group]["retriever_top1_spec_only"],
            }
            for group, entry in results["reuse"]["selection"].items()
        },
        "privacy.json": results["privacy"],
        "cost.json": results["cost"],
    }
    written = []
    for name, data in files.items():
        _json(out_dir / name, data)
        written.append(out_dir / name)
    return written + render(results, out_dir, docs=docs, readme=readme)


def load_results(out_dir: Path) -> dict[str, Any]:
    """The results as `write_report` wrote them (enough to render the plots and markdown again)."""

    def read(name: str) -> Any:
        return _read_result(out_dir, name, "lmdock-lab eval")

    reuse = read("reuse")
    return read("market") | {
        "scores": read("scores"),
        "reuse": {"baselines": reuse["baselines"], "selection": reuse["selection"]},
        "per_task": reuse["per_task"],
        "privacy": read("privacy"),
        "cost": read("cost"),
    }


def render(results: dict[str, Any], out_dir: Path, *, docs: Path | None, readme: Path | None) -> list[Path]:
    """The plots, the markdown report and the README block, from the results."""
    written = write_plots(results, out_dir)
    if docs is not None:
        text = results_markdown(results, plots_from=os.path.relpath(out_dir, docs.parent))
        kept = _kept_blocks(docs)
        atomic_write_text(docs, f"{text}\n{kept}" if kept else text, mode=PUBLISHED)
        written.append(docs)
    if readme is not None and update_readme(
        readme, headline_table(results, plot=os.path.relpath(out_dir, readme.parent))
    ):
        written.append(readme)
    return written
