"""`lmdock-market`: run and administer a market server.

serve    run the market (SQLite or PostgreSQL catalogue, blobs on disk, TLS/mTLS, auth)
keys     create, list and revoke API keys in the market's database
migrate  bring the market database's schema up to date (serve does this too)
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import signal
import sys
import threading
from pathlib import Path

from lmdock.common.errors import InvalidArgument
from lmdock.common.exit_codes import EPILOG, parse_or_exit, run_command
from lmdock.common.profile import SpecProfile
from lmdock.common.profile_factory import (
    PROFILE_KINDS,
    PROJECTED_CLIP_RADIUS,
    PROJECTED_KIND,
    PROJECTED_VARIANCE,
    fit_projected_profile,
    profile_of_kind,
)
from lmdock.common.task_vector import TASK_VECTOR_KIND, TaskVectorProfile
from lmdock.server.apikeys import KEY_CACHE_TTL_S
from lmdock.server.app import ServerSettings, ServerTLS, create_server
from lmdock.server.auth import AccessPolicy
from lmdock.server.base_models import BaseModels, parse_base_model_option
from lmdock.server.catalogue import Catalogue
from lmdock.server.config import (
    add_profile,
    add_task_vector_profile,
    load_added_profiles,
    load_or_create_profile,
    load_task_vector_profiles,
)
from lmdock.server.database_options import add_database_options, add_db_url_option, database_url
from lmdock.server.db import Database
from lmdock.server.identity import Role
from lmdock.server.index.backends import BACKENDS
from lmdock.server.keys_cli import add_keys_commands
from lmdock.server.limits import RateLimits, StreamLimits
from lmdock.server.market import CHANGE_POLL_S, Market, MarketLimits
from lmdock.server.observability import Observer, serve_metrics
from lmdock.server.replica import RETENTION_S
from lmdock.server.task_vector_profiles import task_vector_profile_on
from lmdock.server.workers import one_blas_thread

log = logging.getLogger("lmdock.market")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _positive_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not (math.isfinite(days) and days > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of days, got {text!r}")
    return days


def _tls(args: argparse.Namespace) -> ServerTLS | None:
    if not (args.tls_cert or args.tls_key or args.client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise InvalidArgument("TLS needs both --tls-cert and --tls-key (--client-ca adds mTLS)")
    return ServerTLS(
        cert_file=Path(args.tls_cert),
        key_file=Path(args.tls_key),
        client_ca_file=Path(args.client_ca) if args.client_ca else None,
    )


def _serve(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser()
    profile = load_or_create_profile(data_dir)
    added_profiles = load_added_profiles(data_dir)
    base_models = BaseModels(dict(parse_base_model_option(o) for o in args.base_model))
    limits = MarketLimits(max_package_bytes=args.max_package_bytes)
    tls = _tls(args)
    host = args.listen.rsplit(":", 1)[0]
    if tls is None and host not in LOOPBACK_HOSTS:
        log.warning("listening on %s without TLS: API keys and packages travel in clear", host)
    anonymous = None if args.allow_anonymous == "none" else Role.parse(args.allow_anonymous)
    settings = ServerSettings(
        max_message_bytes=args.max_message_bytes,
        rate_limits=RateLimits(calls_per_second=args.rate_limit, burst=args.burst),
        stream_limits=StreamLimits(
            per_caller=args.max_streams,
            total=args.max_streams_total,
            idle_seconds=args.stream_idle_seconds,
            max_seconds=args.stream_max_seconds,
        ),
        reflection=args.reflection,
    )
    one_blas_thread()
    market = Market.open(
        data_dir,
        profile=profile,
        db_url=args.db_url,
        limits=limits,
        base_models=base_models,
        change_poll_s=args.change_poll_seconds,
        change_retention_s=args.change_log_days * 86400.0,
        api_key_ttl_s=args.api_key_ttl,
        index=args.index,
        added_profiles=added_profiles,
        task_vector_profiles=load_task_vector_profiles(data_dir),
    )
    observer = Observer()
    server, port = create_server(
        market,
        address=args.listen,
        access=AccessPolicy(anonymous_role=anonymous),
        tls=tls,
        settings=settings,
        observer=observer,
    )
    metrics = (
        serve_metrics(observer, port=args.metrics_port, address=args.metrics_address)[0]
        if args.metrics_port is not None
        else None
    )
    # Handlers first: a supervisor may send SIGTERM as soon as it reads the "listening" line.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    log.info(
        "market listening on %s:%d (%s, profiles %s, max_sigma %.4g, %d learnwares searchable by the %s "
        "index, anonymous: %s)",
        host,
        port,
        "mTLS" if tls and tls.client_ca_file else "TLS" if tls else "plaintext",
        ", ".join(
            [p.profile_id for p in market.profiles] + [p.profile_id for p in market.task_vector_profiles]
        ),
        profile.max_sigma,
        len(market.index),
        args.index,
        args.allow_anonymous,
    )
    ready = {"listening": f"{host}:{port}", "profile_id": profile.profile_id}
    if metrics is not None:
        ready["metrics"] = f"http://{args.metrics_address}:{metrics.server_port}/metrics"
    print(json.dumps(ready), flush=True)
    stop.wait()
    log.info("shutting down: draining streams for up to %ss", args.grace)
    server.stop(grace=args.grace)
    if metrics is not None:
        metrics.shutdown()
    market.close()
    return 0


def _profile_file(path: str) -> SpecProfile | TaskVectorProfile:
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"cannot read the profile file {path}: {exc}") from None
    if isinstance(data, dict) and data.get("kind") == TASK_VECTOR_KIND:
        return TaskVectorProfile.from_dict(data)
    return SpecProfile.from_json(text)


def _add_profile(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser()
    if args.kind != PROJECTED_KIND and (args.variance is not None or args.clip_radius is not None):
        raise InvalidArgument(
            "--variance and --clip-radius shape a fitted profile: use them with --kind projected"
        )
    if args.file:
        profile = _profile_file(args.file)
    elif args.kind == TASK_VECTOR_KIND:
        if not args.base:
            raise InvalidArgument("--kind task-vector needs --base: the base model its vectors train on")
        models = BaseModels(dict(parse_base_model_option(o) for o in args.base_model), allow_local_paths=True)
        profile = task_vector_profile_on(args.base, models.folder(args.base))
    elif args.kind == PROJECTED_KIND:
        profile = _projected_profile(args, data_dir)
    else:
        profile = profile_of_kind(args.kind)
    if isinstance(profile, TaskVectorProfile):
        vectors = add_task_vector_profile(data_dir, profile)
        listed = [p.profile_id for p in reversed(vectors)]
        print(
            json.dumps({"added": profile.profile_id, "dim": profile.dim, "task_vector_newest_first": listed})
        )
        return 0
    added = add_profile(data_dir, profile)
    first = load_or_create_profile(data_dir)
    served = [p.profile_id for p in reversed((first, *added))]
    print(
        json.dumps(
            {"added": profile.profile_id, "feature_dim": profile.feature_dim, "served_newest_first": served}
        )
    )
    return 0


#: The most specs a projection is fitted on (an even sample of a larger catalogue): 384 x 100k
#: float64 is 300 MB, and the principal directions of 100k specs are those of a million.
MAX_FITTED_SPECS = 100_000


def _projected_profile(args: argparse.Namespace, data_dir: Path) -> SpecProfile:
    """A projected profile fitted on the specs the market lists under its first profile: its
    learnwares' published releases (post-processing: no privacy cost; docs/search.md)."""
    if not (data_dir / "profile.json").exists():
        raise InvalidArgument(f"{data_dir} holds no market (no profile.json): give the market's --data-dir")
    base = load_or_create_profile(data_dir)
    db = Database(database_url(args))  # opened as `serve` opens it (schema brought up to date)
    try:
        catalogue = Catalogue(db)
        listed = catalogue.count(profile_ids=base.ids)
        step = max(1, math.ceil(listed / MAX_FITTED_SPECS))
        entries = itertools.islice(
            catalogue.iter_index_entries(profile_ids=base.ids, max_sigma=base.max_sigma), 0, None, step
        )
        values, sigmas = [], []
        for e in entries:
            values.append(e.values)
            sigmas.append(e.sigma)
    finally:
        db.close()
    if len(values) < 3:
        raise InvalidArgument(
            f"the market lists {len(values)} learnwares under its profile {base.profile_id}; a "
            "projection is fitted on the specs of at least 3: publish them first"
        )
    return fit_projected_profile(
        values,
        sigmas,
        base=base,
        variance=PROJECTED_VARIANCE if args.variance is None else args.variance,
        clip_radius=PROJECTED_CLIP_RADIUS if args.clip_radius is None else args.clip_radius,
    )


def _migrate(args: argparse.Namespace) -> int:
    db = Database(database_url(args))  # opening migrates
    db.close()
    print(json.dumps({"migrated": True}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmdock-market",
        description="Run an lmdock learnware market.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the market over gRPC")
    add_database_options(serve)
    serve.add_argument(
        "--listen",
        default="127.0.0.1:50051",
        help="host:port; port 0 picks a free one (default: %(default)s)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds to drain streams on shutdown (default: %(default)s)",
    )
    serve.add_argument("--tls-cert", help="server certificate chain (PEM): serve TLS")
    serve.add_argument("--tls-key", help="server private key (PEM)")
    serve.add_argument("--client-ca", help="CA (PEM) of client certificates: require mTLS")
    serve.add_argument(
        "--allow-anonymous",
        choices=("none", "consumer", "publisher"),
        default="none",
        help="what callers without credentials may do (default: nothing but public RPCs)",
    )
    serve.add_argument(
        "--base-model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="accept adapters for base model NAME, whose config.json is in PATH (repeatable)",
    )
    serve.add_argument(
        "--index",
        choices=BACKENDS,
        default="exact",
        help="search index: exact (scan, the default), hnsw or ivf (approximate shortlists re-ranked "
        "exactly, persisted in DATA_DIR/index; need lmdock[ann]); see docs/search.md",
    )
    serve.add_argument("--reflection", action="store_true", help="enable gRPC server reflection")
    serve.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: any)")
    serve.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        help="address of the metrics endpoint (default: %(default)s)",
    )
    serve.add_argument(
        "--rate-limit",
        type=float,
        default=50.0,
        help="calls per second per caller, 0: off (default: %(default)s)",
    )
    serve.add_argument(
        "--burst",
        type=int,
        default=100,
        help="calls a caller may burst (default: %(default)s)",
    )
    defaults = StreamLimits()
    serve.add_argument(
        "--max-streams",
        type=int,
        default=defaults.per_caller,
        help="concurrent streams per caller (0: no cap) (default: %(default)s)",
    )
    serve.add_argument(
        "--max-streams-total",
        type=int,
        default=defaults.total,
        help="concurrent streams over all callers (0: no cap); keep it below the 64 concurrent calls "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--stream-idle-seconds",
        type=float,
        default=defaults.idle_seconds,
        help="close a stream whose caller sends or reads nothing for this long (default: %(default)s)",
    )
    serve.add_argument(
        "--stream-max-seconds",
        type=float,
        default=defaults.max_seconds,
        help="longest a stream may stay open (default: %(default)s)",
    )
    serve.add_argument(
        "--change-poll-seconds",
        type=float,
        default=CHANGE_POLL_S,
        help="how often to read the catalogue's change log when no notification came (replicas) "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--change-log-days",
        type=_positive_days,
        default=RETENTION_S / 86400.0,
        help="how long the change log keeps a change (default: 7); a replica stopped for longer "
        "rebuilds its index from the catalogue when it comes back",
    )
    serve.add_argument(
        "--api-key-ttl",
        type=float,
        default=KEY_CACHE_TTL_S,
        help="seconds an API key is trusted without reading it again: a revocation made by "
        "another process takes effect within this long (0: read on every call) (default: %(default)s)",
    )
    serve.add_argument(
        "--max-message-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="gRPC message limit (default: %(default)s)",
    )
    serve.add_argument(
        "--max-package-bytes",
        type=int,
        default=MarketLimits().max_package_bytes,
        help="largest package accepted (default: %(default)s)",
    )
    serve.set_defaults(func=_serve)
    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    add_database_options(migrate)
    migrate.set_defaults(func=_migrate)
    added = sub.add_parser(
        "add-profile",
        help="serve another spec profile beside the market's (from its next start; docs/search.md)",
    )
    added.add_argument("--data-dir", required=True, help="the market's data folder")
    which = added.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--kind",
        choices=sorted([*PROFILE_KINDS, PROJECTED_KIND, TASK_VECTOR_KIND]),
        help="a built-in spec kind; projected is fitted on the specs the market lists",
    )
    which.add_argument("--file", help="a spec profile or task-vector profile JSON file")
    added.add_argument(
        "--base",
        help="with --kind task-vector: the base model the vectors train on (a packaged model, a "
        "--base-model NAME, or an absolute folder)",
    )
    added.add_argument(
        "--base-model", action="append", default=[], metavar="NAME=PATH", help="register base model NAME"
    )
    add_db_url_option(added)
    added.add_argument(
        "--variance",
        type=float,
        help=f"with --kind projected: the share of the specs' spread kept (default: {PROJECTED_VARIANCE})",
    )
    added.add_argument(
        "--clip-radius",
        type=float,
        help=f"with --kind projected: the clip radius R about the centre (default: {PROJECTED_CLIP_RADIUS})",
    )
    added.set_defaults(func=_add_profile)
    add_keys_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter
    return run_command("lmdock-market", lambda: args.func(args), as_json=bool(getattr(args, "json", False)))


if __name__ == "__main__":
    sys.exit(main())
