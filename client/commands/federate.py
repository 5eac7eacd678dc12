"""`lmdock federate`: several sites as one party, in Flower simulation on this machine.

Parsing and printing only; the federation itself is `lmdock.federated` (imported lazily: the
client never depends on it otherwise).
"""

from __future__ import annotations

import argparse
import logging
import uuid
from pathlib import Path
from typing import Any

from lmdock.client.commands.common import add_json, add_market, market_client

__all__ = ["register"]


def _sites(args: argparse.Namespace) -> Any:
    from lmdock.federated.simulation import sites_from

    if not args.verbose:  # Flower logs every round at INFO
        logging.getLogger("flwr").setLevel(logging.WARNING)
    return sites_from(args.site, Path(args.sites_home), budget_epsilon=args.budget_epsilon)


def _build(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json, table
    from lmdock.federated.build_site import BuildSettings
    from lmdock.federated.simulation import federate_build

    sites = _sites(args)
    settings = BuildSettings(
        federation=uuid.uuid4().hex,
        base_model=args.base,
        labels=tuple(label.strip() for label in args.labels.split(",")),
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        epsilon=args.dp_epsilon,
        delta=args.dp_delta,
        max_tokens=args.max_tokens,
    )
    with market_client(args) as client:
        profile = client.profile()
    summary = federate_build(
        sites,
        settings,
        Path(args.out),
        profile=profile,
        spec_epsilon=args.spec_epsilon,
        spec_delta=args.dp_delta,
    )
    if args.json:
        emit_json({**summary, "out": str(Path(args.out).resolve())})
        return 0
    rows = [[s["site"], s["records"], s["epsilon"], s["delta"], s["steps"]] for s in summary["sites"]]
    print(table(["site", "records", "epsilon", "delta", "DP-SGD steps"], rows))
    for node, reason in summary["refused"].items():
        print(f"refused (node {node}): {reason}")
    print(f"wrote the federated build {args.out}; package it with `lmdock federate package {args.out}`")
    return 0


def _package(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json
    from lmdock.client.publish.package import load_card
    from lmdock.federated.package import package_federation

    overrides = {"id": args.id, "name": args.name, "domain": args.domain, "licence": args.licence}
    card = load_card(Path(args.card) if args.card else None, {**overrides, "publisher": args.publisher})
    out = Path(args.out) if args.out else Path(f"{card.id}.tar")
    manifest = package_federation(Path(args.build_dir), out, card=card, key=None)
    if args.json:
        emit_json({"package": str(out.resolve()), "id": manifest.card.id, "training": manifest.training})
        return 0
    print(f"wrote unsigned package {out} ({manifest.card.id}); sign it with `lmdock sign {out}`")
    return 0


def _search(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json, table
    from lmdock.common.calibration import validate_privacy
    from lmdock.federated.simulation import federate_search

    validate_privacy(epsilon=args.epsilon, delta=args.delta)
    sites = _sites(args)
    with market_client(args) as client:
        profile = client.profile()
    summary = federate_search(
        sites,
        profile,
        Path(args.out),
        epsilon=args.epsilon,
        delta=args.delta,
        shares=args.shares,
        market=args.market,
        top_k=args.top_k,
    )
    if args.json:
        emit_json(summary)
        return 0
    print(
        table(
            ["learnware", "score", "distance"],
            [[m["id"], m["score"], m["distance"]] for m in summary["matches"]],
        )
    )
    privacy = summary["spec"]["privacy"]
    print(
        f"joint spec of {summary['records']} records from {summary['contributors']} of "
        f"{summary['sites']} sites: epsilon={privacy['epsilon']:g}, delta={privacy['delta']:g} "
        "per record, booked in each site's ledger"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json, table
    from lmdock.common.calibration import validate_privacy
    from lmdock.federated.simulation import federate_evaluate

    validate_privacy(epsilon=args.epsilon, delta=args.delta)
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    summary = federate_evaluate(
        _sites(args), args.market, candidates, Path(args.out), epsilon=args.epsilon, delta=args.delta
    )
    if args.json:
        emit_json(summary)
        return 0
    rows = [[r["id"], r["accuracy"], r["spec_rank"]] for r in summary["ranking"]]
    print(table(["learnware", "accuracy (DP)", "spec rank"], rows))
    sd, records, sites = summary["accuracy_sd"], summary["records"], summary["sites"]
    print(f"accuracy sd {sd:.3g} over {records} records of {sites} sites")
    return 0


def _add_sites(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", action="append", required=True, help="NAME=TASKFILE, once per site")
    p.add_argument("--sites-home", default="federation", help="each site's ledger: DIR/NAME/ledger.jsonl")
    p.add_argument("--budget-epsilon", type=float, default=3.0, help="cap of a site's new data set")


def register(sub: Any) -> None:
    fed = sub.add_parser("federate", help="several sites act as one party (Flower, simulated here)")
    jobs = fed.add_subparsers(dest="federate_command", required=True)

    p = jobs.add_parser("build", help="train one DP adapter across the sites (FedAvg of its tensors)")
    _add_sites(p)
    add_market(p)
    add_json(p)
    p.add_argument("--base", required=True, help="base model (a name the market knows, or a folder)")
    p.add_argument("--labels", required=True, help="the label set, a,b,c (declared: it is published)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--dp-epsilon", type=float, required=True, help="each site's DP-SGD epsilon, all rounds")
    p.add_argument("--dp-delta", type=float, default=1e-6)
    p.add_argument("--spec-epsilon", type=float, default=1.0, help="each site's DP spec epsilon")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--out", required=True, help="the build folder to write")
    p.set_defaults(func=_build)

    p = jobs.add_parser("package", help="package a federated build as an unsigned learnware")
    add_json(p)
    p.add_argument("build_dir")
    p.add_argument("--out", help="package path (default: ID.tar)")
    p.add_argument("--card", help="card file (JSON or TOML)")
    for name in ("id", "name", "domain", "licence", "publisher"):
        p.add_argument(f"--{name}", default="")
    p.set_defaults(func=_package)

    p = jobs.add_parser("search", help="search with the sites' joint spec (secure sum, distributed noise)")
    _add_sites(p)
    add_market(p)
    add_json(p)
    p.add_argument("--epsilon", type=float, required=True, help="per record, against everyone")
    p.add_argument("--delta", type=float, default=1e-6)
    p.add_argument("--shares", type=int, default=2, help="sites whose noise the release relies on")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--out", default="federated-search.json", help="where the summary is written")
    p.set_defaults(func=_search)

    p = jobs.add_parser("evaluate", help="re-rank learnwares by the sites' DP counts of correct answers")
    _add_sites(p)
    add_market(p)
    add_json(p)
    p.add_argument("--candidates", required=True, help="learnware ids, a,b,c (e.g. a search's top k)")
    p.add_argument("--epsilon", type=float, required=True, help="each site's, per record, for all counts")
    p.add_argument("--delta", type=float, default=1e-6)
    p.add_argument("--out", default="federated-evaluation.json", help="where the summary is written")
    p.set_defaults(func=_evaluate)
