"""`lmdock demo`: the whole loop on an embedded market (the only command that imports the lab)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lmdock.client.commands.common import add_json

__all__ = ["register"]


def _demo(args: argparse.Namespace) -> int:
    from lmdock.lab.demo import run_demo

    workdir = Path(args.workdir).expanduser() if args.workdir else None
    return run_demo(workdir=workdir, as_json=args.json, quick=args.quick, generative=args.generative)


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole loop on an embedded market with reference learnwares")
    add_json(p)
    p.add_argument("--workdir", help="where the demo market and its cache live (default: the lmdock cache)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny adapters trained in seconds: checks the path, not the scores",
    )
    p.add_argument(
        "--generative",
        action="store_true",
        help="generative learnwares on SmolLM2-135M-Instruct: the hospital's questions answered in text",
    )
    p.set_defaults(func=_demo)
