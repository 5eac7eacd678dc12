"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_cache", "add_json", "add_market", "cache_from"]


def add_market(p: argparse.ArgumentParser) -> None:
    p.add_argument("--market", required=True, help="market address host:port")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="cache folder (default $LMDOCK_HOME or ~/.cache/lmdock)")


def cache_from(args: argparse.Namespace) -> Any:
    from lmdock.client.cache import AdapterCache, default_cache_dir

    return AdapterCache(Path(args.cache).expanduser() if args.cache else default_cache_dir())
