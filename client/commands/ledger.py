"""`lmdock ledger show|verify`: what each data set has spent, and whether the ledger is intact."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from lmdock.client.commands.common import add_json

__all__ = ["add_ledger_options", "ledger_from", "register", "spent_dict", "spent_line"]


def add_ledger_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledger", help="privacy ledger file (default $LMDOCK_HOME/ledger.jsonl)")
    p.add_argument("--ledger-anchor", help="where the ledger's head is anchored (default LEDGER.head)")
    p.add_argument(
        "--budget-epsilon", type=float, default=None, help="per-data-set cap on epsilon (default 3)"
    )
    p.add_argument(
        "--budget-delta", type=float, default=None, help="delta at which the cap holds (default 1e-05)"
    )


def ledger_from(args: argparse.Namespace) -> Any:
    from lmdock.client.ledger import DEFAULT_BUDGET, Ledger, default_ledger_path
    from lmdock.common.accounting import Budget

    budget = Budget(
        epsilon=DEFAULT_BUDGET.epsilon if args.budget_epsilon is None else args.budget_epsilon,
        delta=DEFAULT_BUDGET.delta if args.budget_delta is None else args.budget_delta,
    )
    path = Path(args.ledger).expanduser() if args.ledger else default_ledger_path()
    anchor = Path(args.ledger_anchor).expanduser() if args.ledger_anchor else None
    return Ledger(path, anchor=anchor, budget=budget)


def finite(value: float) -> float | None:
    """JSON has no infinity: an unbounded epsilon is written as null."""
    return value if math.isfinite(value) else None


def spent_dict(ledger: Any, dataset: str, spent: Any) -> dict[str, Any]:
    """What `dataset` has spent (a `Spent`), for `--json` and `spent_line`."""
    return {
        "dataset": dataset,
        "releases": spent.releases,
        "epsilon": finite(spent.epsilon),
        "delta": spent.delta,
        "method": spent.method,
        "cap_epsilon": ledger.budget.epsilon,
    }


def spent_line(ledger: Any, spent: dict[str, Any]) -> str:
    """One line on what a data set has spent (`spent` from `spent_dict`)."""
    total = "unbounded" if spent["epsilon"] is None else f"{spent['epsilon']:.4g}"
    return (
        f"data set {spent['dataset'][:12]}: {spent['releases']} release(s), epsilon={total} spent at "
        f"delta={ledger.budget.delta:g} (cap {ledger.budget.epsilon:g}); ledger {ledger.path}"
    )


def _show(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json, table

    ledger = ledger_from(args)
    state = ledger.state()
    entries = [
        {
            "seq": e.seq,
            "time": e.data["time"],
            "dataset": e.dataset,
            "kind": e.data["kind"],
            "unit": e.data["unit"],
            "epsilon": e.release.epsilon,
            "delta": e.release.delta,
            "noise_multiplier": e.release.noise_multiplier,
            "sample_rate": e.release.sample_rate,
            "steps": e.release.steps,
            "destination": e.data["destination"],
            "digest": e.digest,
        }
        for e in state.entries
    ]
    datasets = [
        spent_dict(ledger, d, state.spent(d)) for d in dict.fromkeys(e.dataset for e in state.entries)
    ]
    if args.json:
        emit_json(
            {
                "path": str(ledger.path),
                "anchor": str(ledger.anchor),
                "head": state.head,
                "interrupted": state.interrupted,
                "budget": {"epsilon": ledger.budget.epsilon, "delta": ledger.budget.delta},
                "entries": entries,
                "datasets": datasets,
            }
        )
        return 0
    print(f"ledger {ledger.path} ({len(entries)} releases, head {state.head[:16]})")
    if not entries:
        return 0
    columns = ("seq", "time", "dataset", "kind", "unit", "epsilon", "delta", "destination")
    rows = [tuple(e[c][:12] if c == "dataset" else e[c] for c in columns) for e in entries]
    print(table(["#", "time (UTC)", "data set", "kind", "unit", "epsilon", "delta", "sent to"], rows))
    print(f"\nspent per data set (epsilon at delta={ledger.budget.delta:g}; cap {ledger.budget.epsilon:g}):")
    summary = [
        (d["dataset"][:12], d["releases"], "unbounded" if d["epsilon"] is None else d["epsilon"], d["method"])
        for d in datasets
    ]
    print(table(["data set", "releases", "epsilon", "bound"], summary))
    if state.interrupted:
        print("\nthe last release was interrupted while being recorded; it counts as spent")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json
    from lmdock.common.errors import IntegrityError

    ledger = ledger_from(args)
    try:
        state = ledger.state()
        digests = [e.digest for e in state.entries]
        if args.expect_head and args.expect_head not in digests:
            raise IntegrityError(
                f"the head {args.expect_head[:16]}… you recorded is not in the ledger (rewritten or cut off)"
            )
    except IntegrityError as exc:
        if not args.json:
            raise
        emit_json({"ok": False, "error": str(exc), "path": str(ledger.path)})
        return 2
    report = {
        "ok": True,
        "path": str(ledger.path),
        "entries": len(state.entries),
        "head": state.head,
        "interrupted": state.interrupted,
    }
    if args.json:
        emit_json(report)
    else:
        print(f"ledger OK: {len(state.entries)} releases, hash chain and anchor intact; head {state.head}")
        if state.interrupted:
            print("(the last release was interrupted while being recorded; it counts as spent)")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("ledger", help="the privacy ledger: releases per data set and their total cost")
    verbs = p.add_subparsers(dest="verb", required=True)
    show = verbs.add_parser("show", help="list every release and what each data set has spent")
    add_json(show)
    add_ledger_options(show)
    show.set_defaults(func=_show)
    verify = verbs.add_parser("verify", help="check the hash chain and the anchored head")
    add_json(verify)
    add_ledger_options(verify)
    verify.add_argument(
        "--expect-head", help="a head digest you recorded earlier: it must still be in the chain"
    )
    verify.set_defaults(func=_verify)
