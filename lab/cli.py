"""`lmdock-lab`: the reference market and its evaluation.

lmdock-lab eval  [--quick] [--data DIR] ...   build, publish, evaluate, write results
lmdock-lab eval --generative [--quick] ...     the same for the generative (SmolLM2) market
lmdock-lab eval --identification [--quick]     leave-one-data-set-out identification on the specs
lmdock-lab eval --task-vector [--quick]        the same: kernel mean vs task vector vs both, by ε and n
lmdock-lab eval --federated [--quick]          sites alone vs federated vs pooled; joint vs own spec search
lmdock-lab build [--quick] [--data DIR]       build (or read back) the reference learnwares
lmdock-lab serve [--quick] [--data DIR]       serve the reference market until interrupted
lmdock-lab tasks --out DIR [--data DIR]       write the user tasks as JSONL task files
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lmdock.common.exit_codes import EPILOG, parse_or_exit

__all__ = ["main"]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _data_root(args: argparse.Namespace) -> Path:
    if args.data:
        return Path(args.data).expanduser()
    if args.quick:
        from lmdock.lab.refdata import DATA_DIR

        return DATA_DIR
    return Path(os.environ.get("LMDOCK_DATA", "../shared/data")).expanduser()


def _workdir(args: argparse.Namespace) -> Path:
    if args.workdir:
        return Path(args.workdir).expanduser()
    from lmdock.client.cache import default_cache_dir

    name = "reference-generative" if getattr(args, "generative", False) else "reference"
    return default_cache_dir() / (f"{name}-quick" if args.quick else name)


def _market(args: argparse.Namespace) -> Any:
    from lmdock.lab.definitions import materialize
    from lmdock.lab.reference_market import FULL, QUICK

    return materialize(QUICK if args.quick else FULL, _data_root(args), quick=args.quick)


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


def _destinations(args: argparse.Namespace, full: str, quick: str) -> tuple[Path, Path | None]:
    """The results folder (`--out`, else `full` or with --quick `quick`) and the markdown report
    (`--docs`, else docs/results.md; none with --quick unless given)."""
    out = Path(args.out) if args.out else Path(quick if args.quick else full)
    docs = None if args.quick and not args.docs else Path(args.docs or "docs/results.md")
    return out, docs


def _print_brief(args: argparse.Namespace, brief: dict[str, Any]) -> int:
    """An evaluation's summary on stdout: JSON with --json, else a `key: value` line each."""
    print(json.dumps(brief, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in brief.items()))
    return 0


def _eval_generative(args: argparse.Namespace) -> int:
    from lmdock.lab.gen_eval import GEN_FULL_SETTINGS, GEN_QUICK_SETTINGS, evaluate_generative
    from lmdock.lab.report import write_generative_report

    settings = dataclasses.replace(
        GEN_QUICK_SETTINGS if args.quick else GEN_FULL_SETTINGS,
        learnwares=_names(args.learnwares),
        tasks=_names(args.tasks),
    )
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=args.repeats)
    if args.examples:
        settings = dataclasses.replace(settings, examples=args.examples)
    if args.generalist_k:
        settings = dataclasses.replace(settings, k=args.generalist_k)
    if args.device or args.dtype:
        settings = dataclasses.replace(settings, device=args.device or "auto", dtype=args.dtype or "auto")
    out, docs = _destinations(args, "results/generative", "results/generative-quick")
    results = evaluate_generative(
        data_root=_data_root(args), workdir=_workdir(args), settings=settings, log=_log, jobs=args.jobs
    )
    readme = Path("README.md") if docs is not None and Path("README.md").exists() else None
    written = write_generative_report(results, out, docs=docs, readme=readme)
    summary = results["summary"]
    brief = {
        "columns": summary["columns"],
        "all": summary["domains"]["all"],
        "wtl": summary["wtl"],
        "timings": results["timings"],
        "written": [str(p) for p in written],
    }
    return _print_brief(args, brief)


def _eval_identification(args: argparse.Namespace) -> int:
    from lmdock.lab.identification import FULL_IDENT, QUICK_IDENT, evaluate_identification, profiles_compared
    from lmdock.lab.reference_market import FULL, QUICK_MIXED
    from lmdock.lab.report import write_identification_report

    settings = QUICK_IDENT if args.quick else FULL_IDENT
    if args.repeats:
        settings = dataclasses.replace(settings, draws=args.repeats)
    out, docs = _destinations(args, "results/identification", "results/identification-quick")
    results = evaluate_identification(
        catalogue=QUICK_MIXED if args.quick else FULL,
        data_root=_data_root(args),
        profiles=profiles_compared(quick=args.quick),
        settings=settings,
        embeddings=_workdir(args) / "embeddings",
        log=_log,
    )
    written = write_identification_report(results, out, docs=docs)
    brief = {
        name: {f"n={c['n']} eps={c['epsilon']}": c["right"]["rate"] for c in p["pooled"]}
        for name, p in results["profiles"].items()
    }
    brief_out = {"right_domain": brief, "seconds": results["seconds"], "written": [str(p) for p in written]}
    return _print_brief(args, brief_out)


def _eval_task_vector(args: argparse.Namespace) -> int:
    from lmdock.client.training.task_vector import task_vector_profile
    from lmdock.common.base_model_files import SMOLLM2
    from lmdock.common.profile_factory import make_profile
    from lmdock.lab.gen_market import GEN_FULL, GEN_QUICK
    from lmdock.lab.report import write_task_vector_report
    from lmdock.lab.task_vector_eval import FULL_TV, QUICK_TV, evaluate_task_vectors

    settings = QUICK_TV if args.quick else FULL_TV
    if args.repeats:
        settings = dataclasses.replace(settings, draws=args.repeats)
    out, docs = _destinations(args, "results/task-vector", "results/task-vector-quick")
    results = evaluate_task_vectors(
        catalogue=GEN_QUICK if args.quick else GEN_FULL,
        data_root=_data_root(args),
        km_profile=make_profile(),
        tv_profile=task_vector_profile(SMOLLM2),
        settings=settings,
        cache=_workdir(args) / "embeddings",
        log=_log,
    )
    written = write_task_vector_report(results, out, docs=docs)
    brief = {f"{c['method']} n={c['n']} eps={c['epsilon']}": c["right"] for c in results["pooled"]}
    brief_out = {"right_domain": brief, "seconds": results["seconds"], "written": [str(p) for p in written]}
    return _print_brief(args, brief_out)


def _privacy_label(epsilon: float | None) -> str:
    return "no DP" if epsilon is None else f"eps={epsilon:g}"


def _eval_federated(args: argparse.Namespace) -> int:
    from lmdock.lab.federated_eval import FULL_FED, QUICK_FED, evaluate_federated
    from lmdock.lab.report import write_federated_report

    settings = QUICK_FED if args.quick else FULL_FED
    if args.repeats:
        settings = dataclasses.replace(
            settings, ident=dataclasses.replace(settings.ident, draws=args.repeats)
        )
    if args.base_model:
        settings = dataclasses.replace(
            settings, train=dataclasses.replace(settings.train, base_model=args.base_model)
        )
    out, docs = _destinations(args, "results/federated", "results/federated-quick")
    results = evaluate_federated(
        data_root=_data_root(args), settings=settings, embeddings=_workdir(args) / "embeddings", log=_log
    )
    written = write_federated_report(results, out, docs=docs)
    training = {
        f"{f['sites']} sites {_privacy_label(r['epsilon'])} seed {r['seed']}": {
            "alone": [a["accuracy"] for a in r["alone"]],
            "federated": r["federated"]["accuracy"],
            "pooled": r["pooled"]["accuracy"],
        }
        for f in results["training"]["federations"]
        for r in f["runs"]
    }
    search = {
        f"eps={c['epsilon']:g}": {m: c[m]["right_learnware"]["rate"] for m in ("alone", "joint")}
        for c in results["search"]["cells"]
    }
    brief = {
        "accuracy": training,
        "right_learnware": search,
        "seconds": results["seconds"],
        "written": [str(p) for p in written],
    }
    return _print_brief(args, brief)


def _eval(args: argparse.Namespace) -> int:
    if args.federated:
        return _eval_federated(args)
    if args.task_vector:
        return _eval_task_vector(args)
    if args.generative:
        return _eval_generative(args)
    if args.identification:
        return _eval_identification(args)
    from lmdock.lab.eval import FULL_SETTINGS, QUICK_SETTINGS, evaluate
    from lmdock.lab.report import write_report

    settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=args.repeats)
    out, docs = _destinations(args, "results", "results/quick")
    readme = None if args.quick or not Path("README.md").exists() else Path("README.md")
    results = evaluate(
        data_root=_data_root(args), workdir=_workdir(args), settings=settings, log=_log, jobs=args.jobs
    )
    written = write_report(results, out, docs=docs, readme=readme)
    overall = results["reuse"]["selection"]["all"]["labels"]
    base = results["reuse"]["baselines"]["all"]
    summary = {
        "selected": overall["selected"]["mean"],
        "ratio_to_oracle": overall["ratio_to_oracle"]["mean"],
        "ties": overall["ties"]["mean"],
        "top1": overall["top1"]["mean"],
        "base": base["base"],
        "random": base["random"],
        "oracle": base["oracle"],
        "seconds": results["seconds"],
        "written": [str(p) for p in written],
    }
    print(json.dumps(summary, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    if args.quick and not (
        summary["selected"] > summary["random"] and summary["selected"] >= summary["base"]
    ):
        _log("lmdock-lab: quick check failed: expected selected > random and selected >= base")
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from lmdock.lab.report import load_generative_results, load_results, render, render_generative

    readme = Path("README.md") if Path("README.md").exists() and not args.no_readme else None
    docs = Path(args.docs or "docs/results.md")
    if args.generative:
        out = Path(args.out or "results/generative")
        written = render_generative(load_generative_results(out), out, docs=docs, readme=readme)
    else:
        out = Path(args.out or "results")
        written = render(load_results(out), out, docs=docs, readme=readme)
    print(json.dumps([str(p) for p in written]) if args.json else "\n".join(str(p) for p in written))
    return 0


def _packages(args: argparse.Namespace, market: Any, profile: Any) -> Any:
    """The reference market's signed packages under `profile`, built into the cache if missing."""
    from lmdock.lab.building import build_in

    return build_in(_workdir(args), market.recipes, profile=profile, log=_log, jobs=args.jobs)


def _build(args: argparse.Namespace) -> int:
    from lmdock.common.profile_factory import make_profile

    profile = make_profile()  # the profile a new market chooses; specs are computed under it
    built = _packages(args, _market(args), profile)
    rows = [
        {"id": b.recipe.card.id, "package": str(b.package), "eval_accuracy": b.stats["eval_accuracy"]}
        for b in built
    ]
    if args.json:
        print(json.dumps({"profile_id": profile.profile_id, "learnwares": rows}, indent=2))
    else:
        for row in rows:
            print(f"{row['id']:34s} held-out accuracy {row['eval_accuracy']:.3f}  {row['package']}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from lmdock.client.connection import MarketClient
    from lmdock.lab.embedded import embedded_market

    market = _market(args)
    market_dir = (
        Path(args.market_dir) if args.market_dir else Path(tempfile.mkdtemp(prefix="lmdock-reference-"))
    )
    with embedded_market(market_dir) as (address, _):
        with MarketClient(address) as client:
            built = _packages(args, market, client.profile())
            present = {lw.card.id for lw in client.list()}
            for b in built:
                if b.recipe.card.id not in present:
                    client.upload(b.package)
        info = {"address": address, "market_dir": str(market_dir), "learnwares": len(built)}
        print(
            json.dumps(info)
            if args.json
            else f"reference market on {address} ({len(built)} learnwares); Ctrl-C stops it",
            flush=True,
        )
        while True:
            time.sleep(3600)


def _tasks(args: argparse.Namespace) -> int:
    market = _market(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for t in market.tasks:
        lines = (
            json.dumps({"text": x, "label": y}, ensure_ascii=False)
            for x, y in zip(t.texts, t.labels, strict=True)
        )
        (out / f"{t.id}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    listing = [{"task": t.id, "n": len(t.texts), "right": list(t.right)} for t in market.tasks]
    print(json.dumps(listing, indent=2) if args.json else f"wrote {len(listing)} task files to {out}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmdock-lab",
        description="The lmdock reference market and its evaluation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str, func: Any, *, data: bool = True, build: bool = True) -> Any:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if data:
            p.add_argument(
                "--data",
                help="data root (default $LMDOCK_DATA or ../shared/data; --quick: the shipped samples)",
            )
            p.add_argument(
                "--quick", action="store_true", help="the small CI slice: shipped samples, tiny training"
            )
        if build:
            p.add_argument("--workdir", help="build cache (default ~/.cache/lmdock/reference[-quick])")
            p.add_argument(
                "--threads",
                type=_positive,
                default=1,
                help="torch CPU threads (default 1: on a shared machine more threads mostly wait)",
            )
            p.add_argument(
                "--jobs",
                type=_positive,
                default=1,
                help="learnwares built in parallel (worker processes; default 1)",
            )
        p.set_defaults(func=func)
        return p

    e = command("eval", "build, publish and evaluate; write results/, plots, docs/results.md", _eval)
    e.add_argument("--out", help="results folder (default results/, or results/quick with --quick)")
    e.add_argument("--docs", help="markdown report (default docs/results.md; none with --quick unless given)")
    e.add_argument(
        "--repeats",
        type=_positive,
        help="private searches per task and point (default 20; quick 3; --identification: per fold, 120; "
        "--federated: per task and ε, 100)",
    )
    e.add_argument(
        "--generative",
        action="store_true",
        help="the generative market (SmolLM2 + LoRA); results/generative/ and its section of docs/results.md",
    )
    e.add_argument(
        "--identification",
        action="store_true",
        help="leave-one-data-set-out identification on the learnwares' specs (no training); "
        "results/identification/ and its section of docs/results.md",
    )
    e.add_argument(
        "--task-vector",
        action="store_true",
        help="kernel mean vs task vector vs both, leave one data set out on the generative market "
        "(no training); results/task-vector/ and its section of docs/results.md",
    )
    e.add_argument(
        "--federated",
        action="store_true",
        help="a federation of sites on a non-IID split of real data: each site alone vs federated vs "
        "pooled training, with and without DP, and joint vs each site's own spec search "
        "(results/federated/ and its section of docs/results.md)",
    )
    e.add_argument(
        "--base-model",
        help="--federated: the classifier's base model for the training half (default MiniLM)",
    )
    e.add_argument("--examples", type=_positive, help="--generative: scored examples per task (default 100)")
    e.add_argument(
        "--generalist-k",
        type=_positive,
        help="--generative: the generalist trains for k times a learnware's optimizer steps (default 3)",
    )
    e.add_argument(
        "--learnwares", help="--generative: only these learnwares (comma-separated; a partial run)"
    )
    e.add_argument(
        "--device",
        help="--generative: where adapters train and score (default cpu, the committed results' "
        "device; auto: cuda, then mps, then cpu)",
    )
    e.add_argument(
        "--dtype", help="--generative: the base model's dtype (default float32; auto: bfloat16 on a GPU)"
    )
    e.add_argument("--tasks", help="--generative: only these user tasks (comma-separated; a partial run)")
    r = command(
        "report",
        "render the plots, docs/results.md and the README table again from results/*.json",
        _report,
        data=False,
        build=False,
    )
    r.add_argument("--out", help="results folder (default results/, or results/generative/)")
    r.add_argument("--generative", action="store_true", help="the generative market's figure and sections")
    r.add_argument("--docs", help="markdown report (default docs/results.md)")
    r.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    command("build", "build (or read back) the reference learnwares", _build)
    s = command("serve", "publish the reference learnwares into a market and serve it", _serve)
    s.add_argument("--market-dir", help="the market's data folder (default: a new temporary folder)")
    t = command("tasks", "write the user tasks as JSONL task files (text, label)", _tasks, build=False)
    t.add_argument("--out", required=True, help="folder for <task>.jsonl")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv)
    from lmdock.client.cli import run_handler
    from lmdock.client.models import quiet_model_libraries

    quiet_model_libraries()
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    return run_handler("lmdock-lab", args)


if __name__ == "__main__":
    sys.exit(main())
