"""Exit codes of lmdock's command lines: one mapping from the typed errors of `errors`.

A script tells "the market is down" from "a bad flag" by the code alone. Codes are stable:
a new error kind gets a new number, an existing number never changes its meaning. Both
`lmdock` and `lmdock-market` (and `lmdock-lab`) exit through `exit_code`, and print
`EPILOG` under their `--help`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Sequence

from lmdock.common.errors import (
    BudgetExceeded,
    Cancelled,
    DeadlineExceeded,
    IntegrityError,
    InvalidArgument,
    LmdockError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "BROKEN_PIPE",
    "EPILOG",
    "ERROR",
    "INTERRUPTED",
    "OK",
    "USAGE",
    "error_object",
    "exit_code",
    "kind_of",
    "parse_or_exit",
    "run_command",
]

OK = 0
ERROR = 1  # any other failure the message explains
USAGE = 2  # a bad flag or value (argparse's own code, kept)
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
BROKEN_PIPE = 141  # the reader of stdout left (`lmdock task list | head`): 128 + SIGPIPE, as a shell tool

#: (error class, exit code, kind, what it means), most specific first; the first match wins.
CODES: tuple[tuple[type[LmdockError], int, str, str], ...] = (
    (InvalidArgument, USAGE, "usage", "a bad flag, value or input file"),
    (Unavailable, 3, "unreachable", "the market or the daemon does not answer"),
    (DeadlineExceeded, 3, "unreachable", "the market or the daemon does not answer"),
    (Unauthenticated, 4, "auth", "the API key or token was refused"),
    (PermissionDenied, 4, "auth", "the API key or token was refused"),
    (BudgetExceeded, 5, "budget", "the privacy budget refused the release (nothing was sent)"),
    (NotFound, 6, "not_found", "no such learnware, task, data set or file"),
    (IntegrityError, 7, "verification", "a signature, hash or ledger check failed"),
    (Cancelled, INTERRUPTED, "cancelled", "interrupted (Ctrl-C) or cancelled"),
)


def exit_code(exc: LmdockError) -> int:
    """The exit code for a typed error (ERROR for a kind without its own code)."""
    return next((code for cls, code, _, _ in CODES if isinstance(exc, cls)), ERROR)


def kind_of(exc: LmdockError) -> str:
    """A stable word for the error's kind, as a JSON error object names it."""
    return next((kind for cls, _, kind, _ in CODES if isinstance(exc, cls)), "error")


def _epilog() -> str:
    lines = ["exit codes:", f"  {OK:<4} success", f"  {ERROR:<4} an error the message explains"]
    seen = {OK, ERROR}
    for _, code, _, meaning in CODES:
        if code not in seen:
            seen.add(code)
            lines.append(f"  {code:<4} {meaning}")
    lines.append(f"  {BROKEN_PIPE:<4} the reader of the output went away (as `| head`), quietly")
    return "\n".join(lines)


#: The table above for `--help` (argparse with RawDescriptionHelpFormatter keeps its lines).
EPILOG = _epilog()


def error_object(kind: str, message: str, code: int) -> dict[str, dict[str, object]]:
    """The JSON a command prints on stdout under `--json` when it fails."""
    return {"error": {"kind": kind, "message": message, "exit_code": code}}


def run_command(prog: str, command: Callable[[], int], *, as_json: bool = False) -> int:
    """Run one subcommand: typed errors become one readable line (or, under `--json`, an
    error object on stdout) and their exit code; a reader that left the pipe ends it quietly."""
    try:
        code = int(command())
        sys.stdout.flush()  # inside: a reader gone by now is a broken pipe like any other
        return code
    except LmdockError as exc:
        code = exit_code(exc)
        if as_json:
            print(json.dumps(error_object(kind_of(exc), str(exc), code), indent=2, sort_keys=True))
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        if as_json:
            print(json.dumps(error_object("cancelled", "interrupted", INTERRUPTED), indent=2, sort_keys=True))
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # stdout's reader is gone: send what is left nowhere, so the exit's flush cannot fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE


def parse_or_exit(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parser.parse_args(argv)`; a usage error under `--json` also prints its error object."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--json" not in argv:
        return parser.parse_args(argv)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return parser.parse_args(argv)
    except SystemExit as exc:
        sys.stderr.write(said.getvalue())
        if exc.code == USAGE:
            message = said.getvalue().strip().splitlines()[-1]  # argparse's "prog: error: ..."
            print(json.dumps(error_object("usage", message, USAGE), indent=2, sort_keys=True))
        raise
