"""`lmdock-market`: run and administer a market server."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from lmdock.common.errors import LmdockError
from lmdock.server.app import create_server
from lmdock.server.config import load_or_create_profile
from lmdock.server.market import Market

log = logging.getLogger("lmdock.market")


def _serve(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser()
    profile = load_or_create_profile(data_dir)
    market = Market.open(data_dir, profile=profile, db_url=args.db_url)
    server, port = create_server(market, address=args.listen)
    server.start()
    host = args.listen.rsplit(":", 1)[0]
    log.info(
        "market listening on %s:%d (profile %s, %d learnwares)",
        host,
        port,
        profile.profile_id,
        len(market.index),
    )
    print(json.dumps({"listening": f"{host}:{port}", "profile_id": profile.profile_id}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down: draining streams for up to %ss", args.grace)
    server.stop(grace=args.grace).wait()
    market.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmdock-market", description="Run an lmdock learnware market.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the market over gRPC")
    serve.add_argument("--data-dir", required=True, help="catalogue, blobs and profile live here")
    serve.add_argument("--listen", default="127.0.0.1:50051", help="host:port (port 0 picks a free one)")
    serve.add_argument("--db-url", default="", help="SQLAlchemy URL (default: SQLite in the data dir)")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds to drain streams on shutdown")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except LmdockError as exc:
        print(f"lmdock-market: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
