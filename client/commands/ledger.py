"""`lmdock ledger show|verify|raise-cap`: what each data set has spent, whether the ledger is
intact, and the one recorded way to raise a data set's cap."""

from __future__ import annotations

import argparse
import getpass
import math
from pathlib import Path
from typing import Any

from lmdock.client.commands.common import add_json

__all__ = ["add_ledger_options", "dataset_name", "ledger_from", "register", "spent_dict", "spent_line"]


def add_ledger_options(p: argparse.ArgumentParser) -> None:
    """The ledger options of a command that releases something (search, build, package)."""
    p.add_argument(
        "--dataset",
        help="name of the data set this release reads, the privacy unit whose cap it counts "
        "against (default: the data file's name without suffix, e.g. notes for notes.jsonl)",
    )
    p.add_argument("--ledger", dest="release_ledger", help=argparse.SUPPRESS)  # refused: ledger_from
    p.add_argument("--ledger-anchor", help="where the ledger's head is anchored (default LEDGER.head)")
    p.add_argument(
        "--budget-epsilon",
        type=float,
        default=None,
        help="cap on epsilon of a data set registered by this command (default 3); a registered "
        "data set keeps the cap stored in the ledger (`lmdock ledger raise-cap`)",
    )
    p.add_argument(
        "--budget-delta",
        type=float,
        default=None,
        help="delta at which a new data set's cap holds (default and most 1e-06)",
    )


def ledger_from(args: argparse.Namespace, *, declared: Any = None) -> Any:
    """The home's ledger (or, for show/verify, the file named by --ledger), with the cap a data
    set registered by this command gets."""
    from lmdock.client.ledger import DEFAULT_BUDGET, Ledger, default_ledger_path
    from lmdock.common.accounting import Budget
    from lmdock.common.errors import InvalidArgument

    if getattr(args, "release_ledger", None):
        raise InvalidArgument(
            f"--ledger is not accepted for a release: there is one privacy ledger per LMDOCK_HOME "
            f"({default_ledger_path()}), so that no second file gives a data set a fresh budget; "
            "set LMDOCK_HOME to use another home"
        )
    epsilon, delta = getattr(args, "budget_epsilon", None), getattr(args, "budget_delta", None)
    budget = Budget(
        epsilon=DEFAULT_BUDGET.epsilon if epsilon is None else epsilon,
        delta=DEFAULT_BUDGET.delta if delta is None else delta,
    )
    chosen = getattr(args, "inspect_ledger", None)
    path = Path(chosen).expanduser() if chosen else default_ledger_path()
    anchor = Path(args.ledger_anchor).expanduser() if args.ledger_anchor else None
    return Ledger(path, anchor=anchor, budget=budget, declared=declared)


def dataset_name(args: argparse.Namespace, data: Path) -> str:
    """--dataset, else the name derived from the data file (`privacy_unit.default_name`)."""
    from lmdock.client.privacy_unit import check_name, default_name

    return check_name(args.dataset) if args.dataset else default_name(data)


def finite(value: float) -> float | None:
    """JSON has no infinity: an unbounded epsilon is written as null."""
    return value if math.isfinite(value) else None


def _spent(spent: Any) -> dict[str, Any] | None:
    if spent is None:
        return None
    return {
        "releases": spent.releases,
        "epsilon": finite(spent.epsilon),
        "delta": spent.delta,
        "method": spent.method,
    }


def spent_dict(dataset: str, spent: Any, per_person: Any, cap: Any, charged: Any = ()) -> dict[str, Any]:
    """What a data set has spent, per record and (apart) per person, for `--json` and
    `spent_line`. The cap holds for the per-record total, which every release counts in."""
    record = _spent(spent)
    assert record is not None
    return {
        "dataset": dataset,
        "releases": spent.releases,
        "epsilon": record["epsilon"],
        "delta": spent.delta,
        "method": spent.method,
        "per_record": record,
        "per_person": _spent(per_person),
        "cap_epsilon": cap.epsilon,
        "cap_delta": cap.delta,
        "charged": list(charged),
    }


def debit_dict(debit: Any) -> dict[str, Any]:
    return spent_dict(debit.dataset, debit.spent, debit.per_person, debit.cap, debit.charged)


def _epsilon(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:.4g}"


def spent_line(ledger: Any, spent: dict[str, Any]) -> str:
    """One line on what a data set has spent (`spent` from `spent_dict`)."""
    person = spent["per_person"]
    per_person = (
        "no person-level bound (a record-level release was booked)"
        if person is None
        else f"epsilon={_epsilon(person['epsilon'])} (delta={person['delta']:g}) per person"
    )
    also = f"; also charged to {', '.join(spent['charged'])} (shared records)" if spent["charged"] else ""
    return (
        f"data set {spent['dataset']} has spent epsilon={_epsilon(spent['epsilon'])} "
        f"(delta={spent['delta']:g}) in all over {spent['releases']} release(s), per record; "
        f"{per_person}; cap epsilon={spent['cap_epsilon']:g} (delta={spent['cap_delta']:g}){also}; "
        f"ledger {ledger.path}"
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
            "charged": list(e.data.get("charged", [])),
            "kind": e.kind,
            "unit": e.data["unit"],
            "epsilon": e.release.epsilon,
            "delta": e.release.delta,
            "noise_multiplier": e.release.noise_multiplier,
            "sample_rate": e.release.sample_rate,
            "steps": e.release.steps,
            "destination": e.data["destination"],
            "digest": e.digest,
        }
        for e in state.releases
    ]
    admin = [
        {"seq": e.seq, "time": e.data["time"], "dataset": e.dataset, "kind": e.kind, "digest": e.digest}
        | {k: e.data[k] for k in ("cap", "previous", "reason", "by", "records") if k in e.data}
        for e in state.entries
        if not e.is_release
    ]
    names = [*state.units, *state.unregistered()]
    datasets = [
        spent_dict(d, state.spent(d), state.per_person(d), state.cap(d))
        | {"registered": d in state.units, "records": state.units[d].records if d in state.units else None}
        for d in names
    ]
    if args.json:
        emit_json(
            {
                "path": str(ledger.path),
                "anchor": str(ledger.anchor),
                "head": state.head,
                "interrupted": state.interrupted,
                "entries": entries,
                "admin": admin,
                "datasets": datasets,
            }
        )
        return 0
    units = len(state.units)
    print(f"ledger {ledger.path} ({len(entries)} releases, {units} data sets, head {state.head[:16]})")
    if entries:
        columns = ("seq", "time", "dataset", "kind", "unit", "epsilon", "delta", "destination")
        rows = [
            tuple(" + ".join([e["dataset"], *e["charged"]]) if c == "dataset" else e[c] for c in columns)
            for e in entries
        ]
        headers = [
            "#",
            "time (UTC)",
            "data set (+ also charged)",
            "kind",
            "unit",
            "epsilon",
            "delta",
            "sent to",
        ]
        print(table(headers, rows))
    if datasets:
        print("\nspent per data set (epsilon per record and, apart, per person; the cap holds per record):")
        summary = [
            (
                d["dataset"][:24] + ("" if d["registered"] else " (unregistered)"),
                d["releases"],
                _epsilon(d["per_record"]["epsilon"]),
                "-" if d["per_person"] is None else _epsilon(d["per_person"]["epsilon"]),
                f"{d['cap_epsilon']:g} at delta={d['cap_delta']:g}",
            )
            for d in datasets
        ]
        print(table(["data set", "releases", "per record", "per person", "cap"], summary))
    for a in admin:
        if a["kind"] == "raise-cap":
            print(
                f"cap of {a['dataset']} raised from {a['previous']['epsilon']:g} to {a['cap']['epsilon']:g} "
                f"by {a['by']} at {a['time']}: {a['reason']}"
            )
    if state.interrupted:
        print("\nthe last release was interrupted while being recorded; it counts as spent")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json
    from lmdock.common.errors import IntegrityError
    from lmdock.common.exit_codes import exit_code

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
        return exit_code(exc)
    report = {
        "ok": True,
        "path": str(ledger.path),
        "entries": len(state.entries),
        "releases": len(state.releases),
        "head": state.head,
        "interrupted": state.interrupted,
    }
    if args.json:
        emit_json(report)
    else:
        print(
            f"ledger OK: {len(state.entries)} entries ({len(state.releases)} releases), hash chain and "
            f"anchor intact; head {state.head}"
        )
        if state.interrupted:
            print("(the last release was interrupted while being recorded; it counts as spent)")
    return 0


def _raise_cap(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json

    ledger = ledger_from(args)
    entry = ledger.raise_cap(args.name, epsilon=args.epsilon, reason=args.reason, by=getpass.getuser())
    if args.json:
        emit_json({"dataset": args.name, "cap": entry.data["cap"], "previous": entry.data["previous"]})
    else:
        print(
            f"cap of data set {args.name} raised from epsilon={entry.data['previous']['epsilon']:g} to "
            f"{entry.data['cap']['epsilon']:g} (entry {entry.seq} of {ledger.path}, with your reason)"
        )
    return 0


def _inspect_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ledger", dest="inspect_ledger", help="ledger file to read (default $LMDOCK_HOME/ledger.jsonl)"
    )
    p.add_argument("--ledger-anchor", help="where the ledger's head is anchored (default LEDGER.head)")


def register(sub: Any) -> None:
    p = sub.add_parser("ledger", help="the privacy ledger: releases per data set and their total cost")
    verbs = p.add_subparsers(dest="verb", required=True)
    show = verbs.add_parser("show", help="list every release and what each data set has spent")
    add_json(show)
    _inspect_options(show)
    show.set_defaults(func=_show)
    verify = verbs.add_parser("verify", help="check the hash chain and the anchored head")
    add_json(verify)
    _inspect_options(verify)
    verify.add_argument(
        "--expect-head", help="a head digest you recorded earlier: it must still be in the chain"
    )
    verify.set_defaults(func=_verify)
    raise_cap = verbs.add_parser(
        "raise-cap", help="raise a data set's cap on epsilon (an administrator's recorded decision)"
    )
    add_json(raise_cap)
    raise_cap.add_argument("name", help="the registered data set")
    raise_cap.add_argument("--epsilon", type=float, required=True, help="the new cap on epsilon")
    raise_cap.add_argument("--reason", required=True, help="why; kept in the ledger with your user name")
    raise_cap.add_argument("--ledger-anchor", help="where the ledger's head is anchored")
    raise_cap.set_defaults(func=_raise_cap)
