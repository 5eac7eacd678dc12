"""Using a market: search with a private spec, pull, run locally, list."""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmdock.client.commands.common import (
    add_cache,
    add_device_options,
    add_json,
    add_market,
    add_task_file,
    cache_from,
    market_client,
    task_from,
)
from lmdock.client.commands.ledger import add_ledger_options

__all__ = ["register"]


def _search(args: argparse.Namespace) -> int:
    if args.spec != "kernel-mean":
        return _search_task_vector(args)
    from lmdock.client.commands.ledger import dataset_name, debit_dict, ledger_from, spent_line
    from lmdock.client.commands.output import emit_json, progress_bar
    from lmdock.client.operations import search_task
    from lmdock.client.task import MIN_SEARCH_RECORDS
    from lmdock.common.calibration import validate_privacy

    validate_privacy(epsilon=args.epsilon, delta=args.delta)
    task = task_from(args, min_records=MIN_SEARCH_RECORDS)
    ledger = ledger_from(args)
    with market_client(args) as client:
        outcome = search_task(
            client,
            task.texts,
            epsilon=args.epsilon,
            delta=args.delta,
            top_k=args.top_k,
            progress=progress_bar("embedding", enabled=not args.json),
            ledger=ledger,
            persons=task.persons,
            dataset=dataset_name(args, Path(args.data)),
        )
        sent = client.bytes_sent
    privacy, result, debit = outcome.spec.privacy, outcome.result, outcome.debit
    assert debit is not None  # a search with a ledger is always booked
    fresh = debit.fresh
    spent = debit_dict(debit)
    if args.json:
        emit_json(
            {
                "matches": [m.__dict__ for m in result.matches],
                "privacy": {**_privacy_dict(privacy), "fresh_release": fresh},
                "ledger": {"path": str(ledger.path), "spent": spent},
                "bytes_sent": sent,
            }
        )
        return 0
    print(matches_table(result.matches))
    what = "this release" if fresh else "re-sent the cached release (no new cost)"
    print(
        f"\nprivacy: {what}: epsilon={privacy.epsilon:g} delta={privacy.delta:g} per {privacy.unit} "
        f"(sigma={privacy.sigma:.4g}, size bucket {privacy.size_bucket}); {sent} bytes sent"
    )
    print(spent_line(ledger, spent))
    return 0


def _privacy_dict(privacy: Any) -> dict[str, Any]:
    return {
        "epsilon": privacy.epsilon,
        "delta": privacy.delta,
        "sigma": privacy.sigma,
        "size_bucket": privacy.size_bucket,
        "unit": privacy.unit,
        "neighbouring": privacy.neighbouring,
    }


def _search_task_vector(args: argparse.Namespace) -> int:
    """`lmdock search --spec task-vector` or `--spec both` (client/training/task_vector_search.py)."""
    from lmdock.client.commands.ledger import dataset_name, debit_dict, ledger_from, spent_line
    from lmdock.client.commands.output import emit_json, progress_bar
    from lmdock.client.privacy_unit import DataSet
    from lmdock.client.task import MIN_SEARCH_RECORDS
    from lmdock.client.training.task_vector_search import fuse, search_both, search_by_task_vector
    from lmdock.common.calibration import validate_privacy
    from lmdock.common.errors import InvalidArgument

    validate_privacy(epsilon=args.epsilon, delta=args.delta)
    task = task_from(args, min_records=MIN_SEARCH_RECORDS)
    if task.persons:
        raise InvalidArgument(
            "the task-vector spec protects one record, not one person: search with --spec kernel-mean "
            "for person-level privacy, or drop the person column"
        )
    ledger = ledger_from(args)
    dataset = DataSet.of(task.texts, name=dataset_name(args, Path(args.data)))
    search = search_by_task_vector if args.spec == "task-vector" else search_both
    with market_client(args) as client:
        found = search(
            client,
            task.texts,
            epsilon=args.epsilon,
            delta=args.delta,
            ledger=ledger,
            dataset=dataset,
            top_k=args.top_k,
            progress=progress_bar("training", enabled=not args.json),
        )
        sent = client.bytes_sent
    rankings = [found] if not isinstance(found, tuple) else list(found)
    fused = fuse(rankings) if len(rankings) > 1 else []
    booked = rankings[-1].debit  # the last booking: it holds what both releases spent
    assert booked is not None  # a search with a ledger is always booked
    spent = debit_dict(booked)
    split = (
        f"the budget (epsilon={args.epsilon:g}, delta={args.delta:g}) is split in half: "
        f"epsilon={args.epsilon / 2:g}, delta={args.delta / 2:g} for each spec"
        if fused
        else ""
    )
    if args.json:
        emit_json(
            {
                "spec": args.spec,
                "rankings": {
                    r.kind: {
                        "matches": [m.__dict__ for m in r.result.matches],
                        "privacy": _privacy_dict(r.spec.privacy),
                    }
                    for r in rankings
                },
                **(
                    {"fused": [m.__dict__ for m in fused[: args.top_k]], "budget_split": split}
                    if fused
                    else {}
                ),
                "ledger": {"path": str(ledger.path), "spent": spent},
                "bytes_sent": sent,
            }
        )
        return 0
    from lmdock.client.commands.output import table

    for r in rankings:
        print(f"{r.kind} ranking:\n{matches_table(r.result.matches, header=HEADERS[r.kind])}\n")
    if fused:
        rows = [
            (i + 1, m.learnware_id, m.domain, f"{m.score:.4f}", *(m.ranks.get(r.kind, "-") for r in rankings))
            for i, m in enumerate(fused[: args.top_k])
        ]
        print("fused ranking (score = sum of 1/(60 + rank) over the rankings listing it):")
        print(table(["rank", "learnware", "domain", "score", *(f"{r.kind} rank" for r in rankings)], rows))
        print(f"\nprivacy: {split}")
    for r in rankings:
        p = r.spec.privacy
        print(
            f"privacy ({r.kind}): epsilon={p.epsilon:g} delta={p.delta:g} per {p.unit} (sigma={p.sigma:.4g})"
        )
    print(f"{sent} bytes sent")
    print(spent_line(ledger, spent))
    return 0


#: What the search table's columns mean, printed above it.
MATCHES_HEADER = (
    "distance: how far each learnware's data lies from your task's (the debiased squared "
    "kernel-mean distance; lower is closer; 0 is as close as the noise can tell, and noise can "
    "push it below 0); ± one standard deviation of it under the privacy noise of both specs. "
    "Ranked by distance + 2 standard deviations of the noise that can reorder matches, so a "
    "noisy spec cannot come first by luck (docs/search.md). confidence: the chance, given the "
    "noise and the gaps, that the match is the nearest of those listed."
)

#: The table's columns: (header, value of a match). A new column is one line here.
MATCH_COLUMNS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("learnware", lambda m: m.learnware_id),
    ("domain", lambda m: m.domain),
    ("distance ± sd", lambda m: f"{m.distance:.4g} ± {m.distance_sd:.2g}"),
    ("confidence", lambda m: f"{m.confidence:.2f}"),
)


#: The same for a ranking of task vectors (a cosine profile).
TASK_VECTOR_HEADER = (
    "distance: the debiased squared distance from your task vector to each learnware's, scaled to "
    "unit length: it orders them by the cosine between the two (what the task asks a model to do; "
    "lower is closer); ± one standard deviation under the privacy noise. Ranked by distance + 2 "
    "standard deviations (docs/search.md). confidence: the chance that the match is the nearest of "
    "those listed."
)
HEADERS = {"kernel-mean": MATCHES_HEADER, "task-vector": TASK_VECTOR_HEADER}


def matches_table(matches: Sequence[Any], *, header: str = MATCHES_HEADER) -> str:
    """The search's answer for a person: what the columns mean, then one row per match."""
    from lmdock.client.commands.output import table

    if not matches:
        return "the market ranked no learnware for this task"
    headers = ["rank", *(name for name, _ in MATCH_COLUMNS)]
    rows = [(i + 1, *(value(m) for _, value in MATCH_COLUMNS)) for i, m in enumerate(matches)]
    return f"{textwrap.fill(header, width=100)}\n\n{table(headers, rows)}"


def _pull(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json
    from lmdock.client.operations import pull

    cache = cache_from(args)
    with market_client(args) as client:
        manifest = pull(client, cache, args.learnware_id)
    if args.json:
        emit_json(
            {
                "learnware_id": manifest.card.id,
                "cached_at": str(cache.folder(manifest.card.id)),
                "publisher": manifest.card.publisher,
            }
        )
    else:
        print(
            f"pulled {manifest.card.id} ({manifest.card.name}) from {manifest.card.publisher}: "
            f"verified, cached at {cache.folder(manifest.card.id)}"
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json
    from lmdock.client.operations import run_task

    task = task_from(args)
    result = run_task(cache_from(args), args.learnware_id, task, device=args.device)
    if args.out:
        out = Path(args.out)
        out.write_text("".join(json.dumps({"prediction": p}) + "\n" for p in result.predictions))
    if args.json:
        emit_json(
            {
                "learnware_id": result.learnware_id,
                "metric": result.metric,
                "score": result.score,
                "predictions": list(result.predictions),
            }
        )
        return 0
    if args.show > 0:
        shown = result.predictions[: args.show]
        print(predictions_table(task, shown, labels=result.metric == "accuracy"))
    if len(result.predictions) > args.show:
        print(f"... ({len(result.predictions)} predictions{'; written to ' + args.out if args.out else ''})")
    if result.score is not None:
        print(f"{result.metric}: {result.score:.4f} on {len(result.predictions)} records")
    return 0


def predictions_table(task: Any, predictions: Sequence[str], *, labels: bool, width: int = 60) -> str:
    """Each shown record's text (cut to `width`), its prediction and, when the file has them,
    its gold label (`labels`) or answer."""
    from lmdock.client.commands.output import table

    gold = task.labels if labels else task.answers
    shown = any(g is not None for g in gold)
    rows = []
    for i, prediction in enumerate(predictions):
        text = " ".join(task.texts[i].split())
        cut = text if len(text) <= width else text[: width - 1] + "…"
        rows.append((cut, " ".join(prediction.split()), *([gold[i] or "-"] if shown else [])))
    return table(["text", "prediction", *(["gold"] if shown else [])], rows)


def _list(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json, table

    with market_client(args) as client:
        items = client.list(domain=args.domain)
    if args.json:
        emit_json(
            [
                {
                    "id": lw.card.id,
                    "name": lw.card.name,
                    "domain": lw.card.domain,
                    "base_model": lw.base_model,
                    "task": lw.task.kind,
                    "publisher": lw.card.publisher,
                    "dp_trained": lw.dp_trained,
                    "dp_epsilon": lw.dp_epsilon if lw.dp_trained else None,
                }
                for lw in items
            ]
        )
    else:
        rows = [
            (
                lw.card.id,
                lw.card.name,
                lw.card.domain,
                lw.task.kind,
                lw.card.publisher,
                f"eps={lw.dp_epsilon:.3g}" if lw.dp_trained else "no",
            )
            for lw in items
        ]
        print(table(["id", "name", "domain", "task", "publisher", "DP-trained"], rows))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("search", help="compute a DP spec of your task locally and find matching learnwares")
    add_market(p)
    add_json(p)
    add_task_file(p, help="your task data (it never leaves this machine)")
    p.add_argument("--epsilon", type=float, required=True, help="privacy budget of this release")
    p.add_argument("--delta", type=float, default=1e-6, help="delta of this release (default 1e-6)")
    p.add_argument("--top-k", type=int, default=5, help="learnwares to rank (default: 5)")
    p.add_argument(
        "--spec",
        choices=("kernel-mean", "task-vector", "both"),
        default="kernel-mean",
        help="what to send: the kernel mean of your texts' embeddings (default), a task vector trained "
        "on them (record-level DP-SGD), or both with the budget split in half and the rankings fused; "
        "on the reference market the kernel mean alone found the right domain most often "
        "(docs/search.md)",
    )
    add_ledger_options(p)
    p.set_defaults(func=_search)

    p = sub.add_parser("pull", help="download, verify and cache a learnware")
    add_market(p)
    add_json(p)
    add_cache(p)
    p.add_argument("learnware_id")
    p.set_defaults(func=_pull)

    p = sub.add_parser("run", help="run a cached learnware on a task, locally")
    add_json(p)
    add_cache(p)
    p.add_argument("learnware_id")
    add_task_file(p, help="task file (optional gold 'label'/'answer' fields or columns)")
    add_device_options(p, dtype=False)
    p.add_argument("--out", help="write predictions as JSONL here")
    p.add_argument(
        "--show", type=int, default=5, help="predictions to print, beside text and gold label (default: 5)"
    )
    p.set_defaults(func=_run)

    p = sub.add_parser("list", help="list the market's learnwares")
    add_market(p)
    add_json(p)
    p.add_argument("--domain", default="", help="only learnwares of this domain (default: all)")
    p.set_defaults(func=_list)
