"""Where a market's database is, as `lmdock-market serve|migrate|keys` take it on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmdock.server.market import default_db_url

__all__ = ["add_database_options", "add_db_url_option", "database_url"]


def add_database_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", required=True, help="catalogue, blobs and profile live here")
    add_db_url_option(p)


def add_db_url_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db-url",
        default="",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in the data dir)",
    )


def database_url(args: argparse.Namespace) -> str:
    """--db-url, or the SQLite file in --data-dir (created if missing)."""
    if args.db_url:
        return str(args.db_url)
    data_dir = Path(args.data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    return default_db_url(data_dir)
