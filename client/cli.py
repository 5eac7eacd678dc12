"""`lmdock`: the on-prem client. Subcommands live in `lmdock.client.commands.*`."""

from __future__ import annotations

import argparse
import logging
import sys

from lmdock.client.commands import daemon, demo, federate, keys, ledger, market, publish
from lmdock.client.models import quiet_model_libraries
from lmdock.common.exit_codes import EPILOG, parse_or_exit, run_command

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
        prog="lmdock",
        description="Find and use specialized models without showing anyone your data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("lmdock")
    except PackageNotFoundError:  # run from a source tree without an install
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    quiet_model_libraries()
    return run_handler("lmdock", args)


def run_handler(prog: str, args: argparse.Namespace) -> int:
    """Run the chosen subcommand; its errors exit with their codes (`lmdock.common.exit_codes`)."""
    return run_command(prog, lambda: args.func(args), as_json=bool(getattr(args, "json", False)))


if __name__ == "__main__":
    sys.exit(main())
