"""`lmdock`: the on-prem client (search, pull, run) and the demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lmdock.common.errors import LmdockError

__all__ = ["main"]


def _quiet_libraries() -> None:
    """Model libraries warn loudly about things a user cannot act on; keep the CLI readable."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(peft|transformers|torch)\.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _cache(args: argparse.Namespace) -> Any:
    from lmdock.client.cache import AdapterCache, default_cache_dir

    return AdapterCache(Path(args.cache).expanduser() if args.cache else default_cache_dir())


def _cmd_search(args: argparse.Namespace) -> int:
    from lmdock.client.connection import MarketClient
    from lmdock.client.operations import search_task
    from lmdock.client.output import emit_json, progress_bar, table
    from lmdock.client.readers import read_task

    task = read_task(Path(args.data))
    with MarketClient(args.market, timeout=args.timeout) as client:
        spec, result = search_task(
            client,
            task.texts,
            epsilon=args.epsilon,
            delta=args.delta,
            top_k=args.top_k,
            progress=progress_bar("embedding", enabled=not args.json),
        )
        sent = client.bytes_sent
    privacy = spec.privacy
    if args.json:
        emit_json(
            {
                "matches": [m.__dict__ for m in result.matches],
                "privacy": {
                    "epsilon": privacy.epsilon,
                    "delta": privacy.delta,
                    "sigma": privacy.sigma,
                    "size_bucket": privacy.size_bucket,
                },
                "bytes_sent": sent,
            }
        )
        return 0
    print(
        table(
            ["rank", "learnware", "domain", "score", "distance"],
            [(i + 1, m.learnware_id, m.domain, m.score, m.distance) for i, m in enumerate(result.matches)],
        )
    )
    print(
        f"\nprivacy spent: epsilon={privacy.epsilon:g} delta={privacy.delta:g} "
        f"(sigma={privacy.sigma:.4g}, size bucket {privacy.size_bucket}); {sent} bytes sent"
    )
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from lmdock.client.connection import MarketClient
    from lmdock.client.operations import pull
    from lmdock.client.output import emit_json

    cache = _cache(args)
    with MarketClient(args.market, timeout=args.timeout) as client:
        manifest = pull(client, cache, args.learnware_id)
    if args.json:
        emit_json(
            {
                "learnware_id": manifest.id,
                "cached_at": str(cache.folder(manifest.id)),
                "publisher": manifest.publisher,
            }
        )
    else:
        print(
            f"pulled {manifest.id} ({manifest.name}) from {manifest.publisher}: "
            f"verified, cached at {cache.folder(manifest.id)}"
        )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from lmdock.client.operations import run_task
    from lmdock.client.output import emit_json
    from lmdock.client.readers import read_task

    result = run_task(_cache(args), args.learnware_id, read_task(Path(args.data)), device=args.device)
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
    for prediction in result.predictions[: args.show]:
        print(prediction)
    if len(result.predictions) > args.show:
        print(f"... ({len(result.predictions)} predictions{'; written to ' + args.out if args.out else ''})")
    if result.score is not None:
        print(f"{result.metric}: {result.score:.4f} on {len(result.predictions)} records")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from lmdock.client.connection import MarketClient
    from lmdock.client.output import emit_json, table

    with MarketClient(args.market, timeout=args.timeout) as client:
        items = client.list(domain=args.domain)
    if args.json:
        emit_json(
            [
                {
                    "id": lw.id,
                    "name": lw.name,
                    "domain": lw.domain,
                    "base_model": lw.base_model,
                    "task": lw.task.kind,
                    "publisher": lw.publisher,
                    "dp_trained": lw.dp_trained,
                }
                for lw in items
            ]
        )
    else:
        print(
            table(
                ["id", "name", "domain", "task", "publisher"],
                [(lw.id, lw.name, lw.domain, lw.task.kind, lw.publisher) for lw in items],
            )
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from lmdock.lab.demo import run_demo  # the lab is only imported for the demo

    workdir = Path(args.workdir).expanduser() if args.workdir else None
    return run_demo(workdir=workdir, as_json=args.json, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmdock", description="Find and use specialized models without showing anyone your data."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def market_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--market", required=True, help="market address host:port")
        p.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("search", help="compute a DP spec of your task locally and find matching learnwares")
    market_args(p)
    common(p)
    p.add_argument("--data", required=True, help="task file (JSONL with a 'text' field)")
    p.add_argument("--epsilon", type=float, required=True, help="privacy budget of this release")
    p.add_argument("--delta", type=float, default=1e-6, help="delta of this release (default 1e-6)")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("pull", help="download, verify and cache a learnware")
    market_args(p)
    common(p)
    p.add_argument("learnware_id")
    p.add_argument("--cache", help="cache folder (default $LMDOCK_HOME or ~/.cache/lmdock)")
    p.set_defaults(func=_cmd_pull)

    p = sub.add_parser("run", help="run a cached learnware on a task, locally")
    common(p)
    p.add_argument("learnware_id")
    p.add_argument("--data", required=True, help="task file (JSONL with 'text', optional 'label'/'answer')")
    p.add_argument("--cache", help="cache folder (default $LMDOCK_HOME or ~/.cache/lmdock)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or a torch device")
    p.add_argument("--out", help="write predictions as JSONL here")
    p.add_argument("--show", type=int, default=5, help="predictions to print")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("list", help="list the market's learnwares")
    market_args(p)
    common(p)
    p.add_argument("--domain", default="")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("demo", help="run the whole loop on an embedded market with reference learnwares")
    common(p)
    p.add_argument("--workdir", help="where the demo market and its cache live (default: the lmdock cache)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny adapters trained in seconds: checks the path, not the scores",
    )
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    _quiet_libraries()
    try:
        return int(args.func(args))
    except LmdockError as exc:
        print(f"lmdock: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmdock: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
