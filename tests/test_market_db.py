"""The market database on SQLite and PostgreSQL: migrations, catalogue, API keys, signing keys."""

from __future__ import annotations

import dataclasses

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from lmdock.common.card import Card
from lmdock.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from lmdock.common.market_types import LearnwareInfo
from lmdock.common.package import FORMAT, TaskInfo
from lmdock.common.signing import generate_key, key_id, public_key_to_b64, sign_manifest
from lmdock.server.apikeys import KEY_CACHE_TTL_S, ApiKeys
from lmdock.server.catalogue import Catalogue
from lmdock.server.db import MIGRATIONS, Database, migrate
from lmdock.server.identity import Role
from lmdock.server.signing_keys import SigningKeys
from lmdock.server.tables import Base
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.helpers import cluster_spec


@pytest.fixture()
def db(db_url: str):
    database = Database(db_url)
    yield database
    database.close()


def info(profile, i: int, **changes) -> LearnwareInfo:
    base = LearnwareInfo(
        card=Card(
            id=f"lw-{i:03d}",
            name=f"Learnware {i}",
            domain=["finance", "medical"][i % 2],
            licence="MIT",
            publisher=["acme", "globex"][i % 2],
            tags=("alpha", f"t{i % 4}"),
        ),
        base_model=["model-a", "model-b"][i % 2],
        task=TaskInfo("classification", ("no", "yes")) if i % 3 else TaskInfo("generation"),
        spec=cluster_spec(profile, i),
        package_sha256=f"{i:064x}",
        package_size=10 + i,
        eval_scores={"accuracy": 0.5 + i / 100},
        created_at="2026-01-01T00:00:00+00:00",
    )
    return dataclasses.replace(base, **changes)


def test_migrated_schema_matches_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    Database(db.url).close()  # a second open re-runs migrations harmlessly


def test_catalogue_round_trip_filters_and_pages(db: Database, profile) -> None:
    catalogue = Catalogue(db)
    items = [info(profile, i) for i in range(7)]
    for lw in items:
        catalogue.add(lw)
    got = catalogue.get("lw-003")
    assert got.card.tags == ("alpha", "t3") and got.eval_scores == {"accuracy": 0.53}
    assert (got.spec.values == items[3].spec.values).all() and got.updated_at == got.created_at
    pages, token = [], ""
    while True:
        page = catalogue.list(page_size=3, page_token=token)
        pages.append([x.card.id for x in page.items])
        token = page.next_token
        if not token:
            break
    assert pages == [["lw-000", "lw-001", "lw-002"], ["lw-003", "lw-004", "lw-005"], ["lw-006"]]

    def ids(**filters) -> list[str]:
        return [x.card.id for x in catalogue.list(page_size=50, **filters).items]

    assert ids(domain="medical") == ["lw-001", "lw-003", "lw-005"]
    assert ids(tag="t2") == ["lw-002", "lw-006"]
    assert ids(tag="alpha", publisher="acme", task_kind="generation") == ["lw-000", "lw-006"]
    assert ids(base_model="model-b", tag="t1") == ["lw-001", "lw-005"]
    assert ids(tag="t") == []  # tags match whole
    with pytest.raises(InvalidArgument, match="page_token"):
        catalogue.list(page_size=3, page_token="bm9wZQ==")


def test_catalogue_duplicates_and_removal(db: Database, profile) -> None:
    catalogue = Catalogue(db)
    catalogue.add(info(profile, 1))
    with pytest.raises(AlreadyExists):
        catalogue.add(info(profile, 1, package_sha256="f" * 64))
    with pytest.raises(AlreadyExists):
        catalogue.add(info(profile, 2, package_sha256=info(profile, 1).package_sha256))
    removed = catalogue.remove("lw-001")
    assert removed.card.id == "lw-001" and not catalogue.exists("lw-001")
    assert catalogue.list(page_size=5, tag="alpha").items == ()
    with pytest.raises(NotFound):
        catalogue.remove("lw-001")
    catalogue.add(info(profile, 1))  # the id and the package are free again


def test_api_keys_are_stored_hashed_and_revocable(db: Database) -> None:
    keys = ApiKeys(db)
    created, key = keys.create("acme", Role.PUBLISHER, note="ops@acme")
    identity = keys.authenticate(key)
    assert (identity.principal, identity.role, identity.key_id) == ("acme", Role.PUBLISHER, created.key_id)
    with db.engine.connect() as conn:
        dump = repr([tuple(r) for r in conn.exec_driver_sql("SELECT * FROM api_keys")])
    secret = key.split("_", 2)[2]  # base64url: the secret itself may hold "_"
    assert len(secret) == 43 and secret not in dump  # the secret never reaches the database
    for bad in ("", "nope", key[:-1] + ("A" if key[-1] != "A" else "B"), f"lmk_{'0' * 12}_{'a' * 43}"):
        with pytest.raises(Unauthenticated):
            keys.authenticate(bad)
    keys.revoke(created.key_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        keys.authenticate(key)
    assert [k.revoked_at != "" for k in keys.list()] == [True]
    with pytest.raises(NotFound):
        keys.revoke("000000000000")
    with pytest.raises(InvalidArgument):
        keys.create("has space", Role.CONSUMER)


def test_a_revocation_reaches_every_replica_within_the_key_cache_ttl(db: Database) -> None:
    """Keys are cached for KEY_CACHE_TTL_S: no database read per call, a revocation honoured by
    the market that made it at once and by any other one sharing the database within the TTL."""
    now = [0.0]
    here = ApiKeys(db, clock=lambda: now[0])
    other_db = Database(db.url)  # another market process on the same database
    try:
        there = ApiKeys(other_db, clock=lambda: now[0])
        created, key = here.create("acme", Role.PUBLISHER)
        assert there.authenticate(key).principal == "acme"  # read once, then cached
        here.revoke(created.key_id)
        with pytest.raises(Unauthenticated, match="revoked"):
            here.authenticate(key)  # the revoking market forgets the key at once
        now[0] = KEY_CACHE_TTL_S - 0.1
        assert there.authenticate(key).principal == "acme"  # the other still trusts its copy ...
        now[0] = KEY_CACHE_TTL_S + 0.1
        with pytest.raises(Unauthenticated, match="revoked"):
            there.authenticate(key)  # ... until the TTL runs out
        with pytest.raises(Unauthenticated, match="unknown"):  # the secret is checked on every call
            there.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B"))
    finally:
        other_db.close()


def test_the_cached_path_answers_as_authenticate_or_defers_to_it(db: Database) -> None:
    """`authenticate_cached` (what the event loop runs, no database read) gives authenticate's
    answer while the key's row is fresh, and None (read it on a worker) otherwise."""
    now = [0.0]
    keys = ApiKeys(db, clock=lambda: now[0])
    created, key = keys.create("acme", Role.CONSUMER)
    assert keys.authenticate_cached(key) is None  # never read yet
    assert keys.authenticate_cached(key) is None  # ... and the cached path does not read it
    assert keys.authenticate(key) == keys.authenticate_cached(key)
    with pytest.raises(Unauthenticated, match="unknown"):  # the secret is checked on both paths
        keys.authenticate_cached(key[:-1] + ("A" if key[-1] != "A" else "B"))
    with pytest.raises(Unauthenticated, match="malformed"):
        keys.authenticate_cached("lmk_123")
    now[0] = KEY_CACHE_TTL_S + 0.1
    assert keys.authenticate_cached(key) is None  # stale: back to the database
    keys.authenticate(key)
    keys.revoke(created.key_id)
    assert keys.authenticate_cached(key) is None  # a revocation drops it from the cache


def test_signing_keys_register_check_and_revoke(db: Database) -> None:
    registry = SigningKeys(db)
    key, other = generate_key(), generate_key()
    registered = registry.register("acme", public_key_to_b64(key.public_key()), registered_by="acme")
    signature = sign_manifest({"format": FORMAT, "id": "x"}, key)
    assert registry.check_signer("acme", signature).key_id == registered.key_id == signature.key_id
    with pytest.raises(PermissionDenied, match="not registered for publisher 'globex'"):
        registry.check_signer("globex", signature)
    with pytest.raises(PermissionDenied, match="not registered"):
        registry.check_signer("acme", sign_manifest({"format": FORMAT, "id": "x"}, other))
    with pytest.raises(AlreadyExists, match="already registered for publisher 'acme'"):
        registry.register("acme", public_key_to_b64(key.public_key()), registered_by="acme")
    # the same key for another publisher is its own row: revoking acme's leaves globex's valid
    registry.register("globex", public_key_to_b64(key.public_key()), registered_by="globex")
    registry.revoke("acme", registered.key_id)
    with pytest.raises(PermissionDenied, match="revoked"):
        registry.check_signer("acme", signature)
    assert registry.check_signer("globex", signature).publisher == "globex"
    with pytest.raises(NotFound):
        registry.revoke("initech", registered.key_id)
    with pytest.raises(AlreadyExists, match="revoked"):
        registry.register("acme", public_key_to_b64(key.public_key()), registered_by="acme")
    assert [k.revoked for k in registry.list("acme")] == [True]
    with pytest.raises(InvalidArgument):
        registry.register("acme", "not base64!", registered_by="acme")


def downgrade(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_signing_key_migration_keeps_rows_and_scopes_ids_per_publisher(db_url: str) -> None:
    public = public_key_to_b64(generate_key().public_key())
    row = {
        "key_id": key_id(public),
        "publisher": "acme",
        "public_key": public,
        "registered_by": "root",
        "created_at": "2026-01-01T00:00:00+00:00",
        "revoked_at": "2026-02-01T00:00:00+00:00",
    }
    columns = ", ".join(row)
    dump = text(f"SELECT {columns} FROM signing_keys")
    engine = create_engine(db_url)
    try:
        migrate(engine, "0001")  # a market from before per-publisher key ids, with one key
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO signing_keys ({columns}) VALUES (:{', :'.join(row)})"), row)
        migrate(engine)
        with engine.connect() as conn:
            assert [dict(r._mapping) for r in conn.execute(dump)] == [row]
        downgrade(engine, "0001")
        with engine.connect() as conn:
            assert [dict(r._mapping) for r in conn.execute(dump)] == [row]
    finally:
        engine.dispose()
    db = Database(db_url)
    try:
        registry = SigningKeys(db)
        assert registry.register("globex", public, registered_by="globex").revoked_at == ""
        assert [(k.publisher, k.revoked) for k in registry.with_id(row["key_id"])] == [
            ("acme", True),
            ("globex", False),
        ]
        with pytest.raises(RuntimeError, match="several publishers"):
            downgrade(db.engine, "0001")  # the old schema cannot hold both
    finally:
        db.close()
