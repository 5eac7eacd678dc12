"""`lmdock`: the on-prem client. Subcommands live in `lmdock.client.commands.*`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from lmdock.client.commands import daemon, demo, keys, ledger, market, publish
from lmdock.common.errors import LmdockError

__all__ = ["build_parser", "main"]

#: Each area of the CLI registers its subcommands here.
REGISTRARS = (
    market.register,
    ledger.register,
    publish.register,
    keys.register,
    daemon.register,
    demo.register,
)


def _quiet_libraries() -> None:
    """Model libraries warn loudly about things a user cannot act on; keep the CLI readable."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(peft|transformers|torch)\.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


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
