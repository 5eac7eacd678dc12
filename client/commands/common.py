"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["add_cache", "add_json", "add_market", "add_task_file", "cache_from", "market_client", "task_from"]

API_KEY_ENV = "LMDOCK_API_KEY"
MARKET_ENV = "LMDOCK_MARKET"


def add_market(p: argparse.ArgumentParser) -> None:
    default = os.environ.get(MARKET_ENV, "").strip()
    p.add_argument(
        "--market",
        required=not default,
        default=default or None,
        help=f"market address host:port (default: ${MARKET_ENV}" + (f", now {default})" if default else ")"),
    )
    p.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds (default: 30)")
    p.add_argument(
        "--api-key",
        help=f"API key from the market's operator (default: ${API_KEY_ENV}; prefer the variable)",
    )
    p.add_argument("--tls-ca", help="connect over TLS, trusting this CA certificate file (PEM)")
    p.add_argument("--tls-cert", help="client certificate (PEM) for a market that requires mTLS")
    p.add_argument("--tls-key", help="key (PEM) of the client certificate")
    p.add_argument(
        "--tls-pin",
        help="sha256 of the market's certificate (hex); any other certificate is refused (implies TLS)",
    )
    p.add_argument("--tls-server-name", help="name to verify in the market's certificate, if not its host")


def market_client(args: argparse.Namespace, *, recorder: Any = None) -> Any:
    """A MarketClient for the --market/--api-key/--tls-* options of `args` (and a wire recorder)."""
    from lmdock.client.connection import MarketClient, TlsOptions

    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key or args.tls_pin:

        def path(value: str | None) -> Path | None:
            return Path(value).expanduser() if value else None

        tls = TlsOptions(
            ca_file=path(args.tls_ca),
            cert_file=path(args.tls_cert),
            key_file=path(args.tls_key),
            pin_sha256=args.tls_pin or "",
            server_name=args.tls_server_name or "",
        )
    api_key = args.api_key or os.environ.get(API_KEY_ENV)  # MarketClient strips a trailing newline
    return MarketClient(args.market, timeout=args.timeout, tls=tls, api_key=api_key, recorder=recorder)


def add_device_options(p: Any, *, dtype: bool = True) -> None:
    """--device (and --dtype): where a model runs or trains, as `lmdock.client.device` picks them."""
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or a torch device")
    if dtype:
        p.add_argument(
            "--dtype",
            default="auto",
            help="auto (bfloat16 on a GPU that has it, float32 on the cpu), float32, bfloat16 or float16",
        )


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="cache folder (default $LMDOCK_HOME or ~/.cache/lmdock)")


def cache_from(args: argparse.Namespace) -> Any:
    from lmdock.client.cache import AdapterCache, default_cache_dir

    return AdapterCache(Path(args.cache).expanduser() if args.cache else default_cache_dir())


def add_task_file(p: argparse.ArgumentParser, *, help: str) -> None:
    """--data and how to read it: the options of every command that reads a user's task file."""
    p.add_argument("--data", required=True, help=help + "; JSONL, CSV/TSV (with a header) or text")
    p.add_argument("--format", default="auto", help="jsonl, csv, tsv or text (default: from the suffix)")
    p.add_argument("--text-column", default="text", help="CSV/TSV column holding the text")
    p.add_argument("--label-column", default="", help="CSV/TSV column holding gold labels")
    p.add_argument("--answer-column", default="", help="CSV/TSV column holding gold answers")
    p.add_argument(
        "--person-field",
        default="",
        help="field (JSONL; default 'person') or column (CSV/TSV) naming the person behind each "
        "record; when present, one person is the privacy unit",
    )


def task_from(args: argparse.Namespace, *, min_records: int = 1) -> Any:
    """The task file of `add_task_file`'s options, through the one front door for task data."""
    from lmdock.client.task import Columns, read_task_file

    columns = Columns(
        text=args.text_column, label=args.label_column, answer=args.answer_column, person=args.person_field
    )
    return read_task_file(
        Path(args.data).expanduser(), format=args.format, columns=columns, min_records=min_records
    )
