"""`lmdock keys`: a publisher's Ed25519 signing key, on disk (gen, show) and on a market
(register, list, revoke)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmdock.client.commands.common import add_json, add_market, market_client

__all__ = ["add_key_option", "load_signing_key", "register"]


def add_key_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", help="key file (default $LMDOCK_HOME/keys/publisher.key)")


def _key_path(args: argparse.Namespace) -> Path:
    if args.key:
        return Path(args.key).expanduser()
    from lmdock.client.cache import default_cache_dir

    return default_cache_dir() / "keys" / "publisher.key"


def load_signing_key(args: argparse.Namespace) -> Any:
    """The private key named by --key (or the default one); a clear error when there is none."""
    from lmdock.common.errors import FailedPrecondition
    from lmdock.common.signing import load_private_key

    path = _key_path(args)
    if not path.exists():
        raise FailedPrecondition(f"no signing key at {path}: create one with `lmdock keys gen`")
    return load_private_key(path)


def _public_key(args: argparse.Namespace) -> str:
    from lmdock.common.signing import public_key_to_b64

    return public_key_to_b64(load_signing_key(args).public_key())


def _gen(args: argparse.Namespace) -> int:
    from lmdock.common.errors import AlreadyExists
    from lmdock.common.signing import generate_key, save_private_key

    path = _key_path(args)
    if path.exists() and not args.force:
        raise AlreadyExists(f"{path} already exists; pass --force to replace it (its signatures stay valid)")
    save_private_key(generate_key(), path)
    return _show(args)


def _show(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json
    from lmdock.common.signing import key_id

    path, public = _key_path(args), _public_key(args)
    if args.json:
        emit_json({"path": str(path), "key_id": key_id(public), "public_key": public})
    else:
        print(f"key {key_id(public)} at {path}\npublic key (base64): {public}")
    return 0


def _register(args: argparse.Namespace) -> int:
    """Register the key's public half for the caller (admins: for --publisher), with the proof of
    possession the market asks for (signed here with the key). Re-running is safe."""
    from lmdock.client.commands.output import emit_json
    from lmdock.common.errors import AlreadyExists
    from lmdock.common.signing import key_id, public_key_to_b64

    key = load_signing_key(args)
    with market_client(args) as client:
        try:
            info, fresh = client.register_signing_key(key, publisher=args.publisher), True
        except AlreadyExists:
            # registered before: fine if it is still valid (key ids are per publisher)
            publisher = args.publisher or client.whoami().principal
            kid = key_id(public_key_to_b64(key.public_key()))
            known = [k for k in client.signing_keys(publisher) if k.key_id == kid]
            if not known or known[0].revoked:
                raise
            info, fresh = known[0], False
    if args.json:
        emit_json({**asdict(info), "registered": fresh})
    else:
        verb = "registered" if fresh else "already registered"
        print(f"{verb}: signing key {info.key_id} for publisher {info.publisher!r} on {args.market}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json, table

    with market_client(args) as client:
        keys = client.signing_keys(args.publisher)
    if args.json:
        emit_json([asdict(k) for k in keys])
        return 0
    rows = [(k.key_id, k.publisher, k.created_at, k.revoked_at or "-") for k in keys]
    print(table(["key id", "publisher", "registered", "revoked"], rows))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json

    with market_client(args) as client:
        info = client.revoke_signing_key(args.key_id, publisher=args.publisher)
    if args.json:
        emit_json(asdict(info))
    else:
        print(f"revoked signing key {info.key_id} of publisher {info.publisher!r} at {info.revoked_at}")
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="publisher signing keys (Ed25519)").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("gen", help="create a signing key")
    add_json(p)
    add_key_option(p)
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=_gen)

    p = keys.add_parser("show", help="print a key's id and public key")
    add_json(p)
    add_key_option(p)
    p.set_defaults(func=_show)

    p = keys.add_parser("register", help="register your key's public half with a market (publishers)")
    add_market(p)
    add_json(p)
    add_key_option(p)
    p.add_argument("--publisher", default="", help="admins only: register it for this publisher")
    p.set_defaults(func=_register)

    p = keys.add_parser("list", help="signing keys registered with a market, revoked ones included")
    add_market(p)
    add_json(p)
    p.add_argument("--publisher", default="", help="only this publisher's keys")
    p.set_defaults(func=_list)

    p = keys.add_parser("revoke", help="revoke a registered signing key (its owner or an admin)")
    add_market(p)
    add_json(p)
    p.add_argument("key_id")
    p.add_argument("--publisher", default="", help="admins: whose key, when several publishers have it")
    p.set_defaults(func=_revoke)
