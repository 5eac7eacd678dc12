"""`lmdock`: the on-prem client. Subcommands live in `lmdock.client.commands.*`."""

from __future__ import annotations

import argparse
import logging
import sys

from lmdock.client.commands import daemon, demo, federate, keys, ledger, market, publish
from lmdock.client.models import quiet_model_libraries
from lmdock.common.errors import LmdockError

__all__ = ["build_parser", "main", "run_handler"]

#: Each area of the CLI registers its subcommands here.
REGISTRARS = (
    market.register,
    ledger.register,
    publish.register,
    keys.register,
    daemon.register,
    demo.register,
    federate.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmdock", description="Find and use specialized models without showing anyone your data."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    quiet_model_libraries()
    return run_handler("lmdock", args)


def run_handler(prog: str, args: argparse.Namespace) -> int:
    """Run the chosen subcommand: lmdock's errors become one readable line and exit status 2."""
    try:
        return int(args.func(args))
    except LmdockError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
