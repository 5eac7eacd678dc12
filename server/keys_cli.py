"""`lmdock-market keys create|list|revoke`: API keys, managed in the market's database.

A key is printed once, at creation; the database keeps only its hash. Revocation takes effect
on the key's next call, also while the market is serving.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from lmdock.server.apikeys import ApiKeys
from lmdock.server.database_options import add_database_options, database_url
from lmdock.server.db import Database
from lmdock.server.identity import Role

__all__ = ["add_keys_commands"]


@contextmanager
def _keys(args: argparse.Namespace) -> Iterator[ApiKeys]:
    store = ApiKeys(Database(database_url(args)))
    try:
        yield store
    finally:
        store.db.close()


def _create(args: argparse.Namespace) -> int:
    with _keys(args) as store:
        info, key = store.create(args.principal, Role.parse(args.role), note=args.note)
    if args.json:
        print(json.dumps({**asdict(info), "api_key": key}))
    else:
        print(f"API key for {info.principal} ({info.role}), id {info.key_id}:\n{key}")
        print("It is shown only now; give it to its owner over a safe channel.")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _keys(args) as store:
        keys = store.list()
    if args.json:
        print(json.dumps([asdict(k) for k in keys]))
        return 0
    print(f"{'key id':<14}{'principal':<24}{'role':<11}{'created':<27}revoked")
    for k in keys:
        print(f"{k.key_id:<14}{k.principal:<24}{k.role:<11}{k.created_at:<27}{k.revoked_at or '-'}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with _keys(args) as store:
        info = store.revoke(args.key_id)
    print(
        json.dumps(asdict(info))
        if args.json
        else f"revoked {info.key_id} ({info.principal}) at {info.revoked_at}"
    )
    return 0


def add_keys_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--principal", required=True, help="who the key is for (a publisher's name)")
    create.add_argument("--role", required=True, choices=("consumer", "publisher", "admin"))
    create.add_argument("--note", default="", help="free text, e.g. the owner's contact")
    create.set_defaults(func=_create)
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.set_defaults(func=_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_revoke)
    for p in (create, listing, revoke):
        add_database_options(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")
