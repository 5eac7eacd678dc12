"""Replicas: two markets on one PostgreSQL database and one blob folder agree (issue 21, item 2).

Each market is a `Market` + `MarketServer` with its own `Database`, as two processes would be.
Their change-log polls are set to an hour, so what one learns of the other's writes comes from
PostgreSQL's notifications, or, once those were missed, from catching up on reconnection.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from lmdock.client.connection import MarketClient
from lmdock.common.errors import AlreadyExists, NotFound
from lmdock.common.spec import Spec
from lmdock.server.auth import AccessPolicy
from lmdock.server.identity import Role
from sqlalchemy import text

from tests.helpers import cluster_spec, make_adapter
from tests.market_helpers import TINY_BERT, Running, running_market
from tests.test_upload_checks import package

NO_POLL = 3600.0
LISTENERS = "application_name = 'lmdock-replica'"


def eventually(condition: Callable[[], bool], what: str, within: float = 15.0) -> None:
    """Wait for another replica's change to arrive (a wait, not a timing: no figure is asserted)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def admin(running: Running) -> MarketClient:
    _, key = running.market.api_keys.create("root", Role.ADMIN)
    return MarketClient(running.address, api_key=key)


def found(running: Running, spec: Spec) -> list[str]:
    with MarketClient(running.address) as client:
        return [m.learnware_id for m in client.search(spec, top_k=10).matches]


@pytest.fixture()
def pg_url(pg_cluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_adapter(tiny_bert, tmp_path_factory.mktemp("adapter") / "a", base_name=TINY_BERT)


@pytest.fixture()
def replicas(tmp_path: Path, pg_url: str, tiny_bert: Path, profile) -> Iterator[tuple[Running, Running]]:
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                running_market(
                    tmp_path / "shared",  # one data dir: the profile and the blob store
                    profile,
                    db_url=pg_url,
                    base_models={TINY_BERT: tiny_bert},
                    access=AccessPolicy.open_demo(),
                    change_poll_s=NO_POLL,
                )
            )
            for _ in range(2)
        )
        eventually(
            lambda: a.market.follower.listening.is_set() and b.market.follower.listening.is_set(), "LISTEN"
        )
        yield a, b


def test_upload_on_one_replica_is_found_and_served_by_the_other_and_unpublish_reaches_back(
    replicas: tuple[Running, Running], adapter: Path, tmp_path: Path, profile
) -> None:
    a, b = replicas
    spec = cluster_spec(profile, 1)
    pkg = package(tmp_path, adapter, profile, learnware_id="rep-1", spec=spec)
    with MarketClient(a.address) as client:
        client.upload(pkg)
    assert found(a, spec)[0] == "rep-1"  # the writer reads its own write at once
    eventually(lambda: found(b, spec)[:1] == ["rep-1"], "B finds A's upload")
    with admin(b) as client:
        client.download("rep-1", tmp_path / "got.tar")
        assert (tmp_path / "got.tar").read_bytes() == pkg.read_bytes()
        client.unpublish("rep-1")
    assert found(b, spec) == []
    eventually(lambda: found(a, spec) == [], "A forgets what B unpublished")
    with MarketClient(a.address) as client, pytest.raises(NotFound):
        client.download("rep-1", tmp_path / "gone.tar")
    assert a.market.blobs.digests() == set()  # B deleted the bytes: nothing lists them


def test_a_replica_that_missed_notifications_catches_up(
    replicas: tuple[Running, Running], adapter: Path, tmp_path: Path, profile
) -> None:
    a, b = replicas
    spec = cluster_spec(profile, 2)
    b.market.follower.stop()  # B hears nothing (a paused process, a partition)
    with MarketClient(a.address) as client:
        client.upload(package(tmp_path, adapter, profile, learnware_id="rep-2", spec=spec))
    assert found(b, spec) == []  # stale, as a replica without its feed would stay for good
    b.market.follower.start()  # back: it catches up from its watermark before listening again
    eventually(lambda: found(b, spec)[:1] == ["rep-2"], "B catches up after the pause")
    with a.market.db.engine.begin() as conn:  # every listener loses its connection
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {LISTENERS}"))
    with admin(a) as client:
        client.unpublish("rep-2")
    eventually(lambda: found(b, spec) == [], "B catches up after reconnecting")
    eventually(lambda: b.market.follower.listening.is_set(), "B listens again")


def test_identical_uploads_on_two_replicas_publish_once_and_keep_the_bytes(
    replicas: tuple[Running, Running], adapter: Path, tmp_path: Path, profile
) -> None:
    """The blob folder is shared: the loser on one replica must not delete the winner's bytes."""
    pkg = package(tmp_path, adapter, profile, learnware_id="rep-3", spec=cluster_spec(profile, 3))
    start, outcomes = threading.Barrier(2), []

    def upload(running: Running) -> None:
        with MarketClient(running.address) as client:
            start.wait()
            try:
                client.upload(pkg)
                outcomes.append("published")
            except AlreadyExists:
                outcomes.append("refused")

    threads = [threading.Thread(target=upload, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["published", "refused"]
    for running in replicas:
        with MarketClient(running.address) as client:
            got = tmp_path / f"got-{running.port}.tar"
            client.download("rep-3", got)
            assert got.read_bytes() == pkg.read_bytes()


def test_unpublish_on_one_replica_racing_a_republish_on_the_other_never_loses_listed_bytes(
    replicas: tuple[Running, Running], adapter: Path, tmp_path: Path, profile
) -> None:
    """Unpublish through B while A republishes the same package: whichever wins, a listed
    learnware's bytes are all there and unlisted bytes are gone."""
    a, b = replicas
    pkg = package(tmp_path, adapter, profile, learnware_id="rep-4", spec=cluster_spec(profile, 4))
    with MarketClient(a.address) as client:
        client.upload(pkg)
    with admin(b) as remover, MarketClient(a.address) as publisher:
        for trial in range(3):
            eventually(lambda: publisher.list() != [], "listed before the race")
            start = threading.Barrier(2)

            def unpublish(remover: MarketClient = remover, start: threading.Barrier = start) -> None:
                start.wait()
                remover.unpublish("rep-4")

            def republish(publisher: MarketClient = publisher, start: threading.Barrier = start) -> None:
                start.wait()
                with contextlib.suppress(AlreadyExists):  # it was still listed
                    publisher.upload(pkg)

            threads = [threading.Thread(target=unpublish), threading.Thread(target=republish)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if publisher.list():
                got = tmp_path / f"race-{trial}.tar"
                publisher.download("rep-4", got)
                assert got.read_bytes() == pkg.read_bytes()
            else:
                assert a.market.blobs.digests() == set()
                publisher.upload(pkg)  # listed again for the next trial


def test_replicas_on_one_sqlite_file_agree_by_polling(
    tmp_path: Path, adapter: Path, tiny_bert: Path, profile
) -> None:
    """SQLite has no notifications: a replica learns of the other's writes on its next poll."""
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                running_market(
                    tmp_path / "shared",
                    profile,
                    base_models={TINY_BERT: tiny_bert},
                    access=AccessPolicy.open_demo(),
                    change_poll_s=0.05,
                )
            )
            for _ in range(2)
        )
        spec = cluster_spec(profile, 5)
        with MarketClient(a.address) as client:
            client.upload(package(tmp_path, adapter, profile, learnware_id="rep-5", spec=spec))
        eventually(lambda: found(b, spec)[:1] == ["rep-5"], "B polls A's upload")
        with admin(b) as client:
            client.unpublish("rep-5")
        eventually(lambda: found(a, spec) == [], "A polls B's unpublish")


def test_a_replica_away_longer_than_the_change_log_keeps_rebuilds_its_index(
    replicas: tuple[Running, Running], adapter: Path, tmp_path: Path, profile
) -> None:
    a, b = replicas
    gone, kept, later = (cluster_spec(profile, k) for k in (6, 7, 8))
    with MarketClient(a.address) as client:
        client.upload(package(tmp_path, adapter, profile, learnware_id="rep-6", spec=gone))
    eventually(lambda: found(b, gone)[:1] == ["rep-6"], "B finds rep-6")
    b.market.follower.stop()  # B is away ...
    with admin(a) as client:
        client.unpublish("rep-6")
        client.upload(package(tmp_path, adapter, profile, learnware_id="rep-7", spec=kept))
    newest = a.market.catalogue.last_change()
    # ... for longer than the log keeps changes: all but the newest are pruned
    assert a.market.catalogue.prune_changes(before="9999-12-31T00:00:00+00:00") >= 2
    assert a.market.catalogue.first_change() == newest
    stale = b.market.index
    b.market.follower.start()
    eventually(lambda: b.market.index is not stale, "B rebuilds its index")
    assert "rep-6" not in found(b, gone) and found(b, kept)[:1] == ["rep-7"]
    with MarketClient(a.address) as client:  # numbering goes on after the newest change kept
        client.upload(package(tmp_path, adapter, profile, learnware_id="rep-8", spec=later))
    assert a.market.catalogue.last_change() == newest + 1
    eventually(lambda: found(b, later)[:1] == ["rep-8"], "B follows on from the rebuilt index")
