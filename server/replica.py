"""Keeping one market process's search index in step with the catalogue's change log.

The database is the source of truth: every add and remove is a numbered row in
`catalogue_changes`, committed in order (`catalogue`). Each market process holds a watermark,
the last change its index has applied, and applies the ones after it: right after its own
writes (so a caller reads what it wrote), when PostgreSQL notifies a change (LISTEN on
`CHANGES_CHANNEL`: the wake-up), and every `poll_s` seconds whatever happens (the fallback,
and the only way on SQLite). A process whose notifications were lost (a dropped connection,
a paused process) catches up from its watermark on the next poll or reconnection, so no
change is missed, only seen later. The index is updated only through `SpecIndex.add/remove`.

The log keeps `retention_s` of changes (and always the newest); each process prunes what is
older every `PRUNE_EVERY_S`. A process whose watermark fell behind the oldest change kept (it
was paused, or disconnected, for longer than the retention) cannot know what it missed, so it
rebuilds its index from the catalogue (`rebuild`, what a start does) and follows on from there.
A rolled-back number at the edge of the log can make it rebuild when it need not; never the
reverse.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from lmdock.common.errors import NotFound
from lmdock.common.market_types import LearnwareInfo
from lmdock.server.catalogue import CHANGES_CHANNEL, Catalogue
from lmdock.server.index import SpecIndex
from sqlalchemy.engine import make_url

__all__ = ["RETENTION_S", "IndexFollower", "Rebuild"]

log = logging.getLogger("lmdock.market.replica")

#: Changes read per query while catching up.
BATCH = 1000
#: How long the change log keeps a change (the default of `--change-log-days`), and how often
#: each market prunes it.
RETENTION_S = 7 * 24 * 3600.0
PRUNE_EVERY_S = 3600.0

#: A fresh index built from the catalogue: (index, watermark before its rows were read, the
#: latest change once they were).
Rebuild = Callable[[], tuple[SpecIndex, int, int]]


class IndexFollower:
    """Keeps an index built by `rebuild` in step with the change log; `start()` follows it on a
    thread.

    `settled` is the latest change when the index was built: changes up to it may already be
    in the index (it was loaded while they committed), so their adds replace rather than
    append.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        rebuild: Rebuild,
        *,
        accept: Callable[[LearnwareInfo], bool],
        poll_s: float,
        retention_s: float = RETENTION_S,
    ) -> None:
        self.catalogue, self.rebuild, self.accept = catalogue, rebuild, accept
        self.poll_s, self.retention_s = poll_s, retention_s
        self.index, self.watermark, self._settled = rebuild()
        self._pruned_at = 0.0
        self._apply = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while a LISTEN connection is up (PostgreSQL)

    def catch_up(self) -> int:
        """Apply every change after the watermark; returns how many were applied."""
        applied = 0
        with self._apply:
            if self.watermark + 1 < self.catalogue.first_change():
                log.warning(
                    "changes after %d were pruned from the change log before this market read "
                    "them: rebuilding its index from the catalogue",
                    self.watermark,
                )
                # the old index is dropped, not closed: closing a persisted one would save it
                # over the new one's files
                self.index, self.watermark, self._settled = self.rebuild()
            while batch := self.catalogue.changes_after(self.watermark, limit=BATCH):
                for change in batch:
                    if change.op == "add":
                        self._add(change.learnware_id, replace=change.seq <= self._settled)
                    else:
                        self.index.remove(change.learnware_id)
                    self.watermark = change.seq
                applied += len(batch)
        return applied

    def _add(self, learnware_id: str, *, replace: bool) -> None:
        try:
            info = self.catalogue.get(learnware_id, with_task_vector=True)
        except NotFound:  # removed since: its remove comes later in the log
            return
        if replace:
            self.index.remove(learnware_id)
        if self.accept(info):
            self.index.add(info)

    def start(self) -> None:
        self._stop.clear()
        postgres = self.catalogue.db.engine.dialect.name == "postgresql"
        target = self._listen_loop if postgres else self._poll_loop
        self._thread = threading.Thread(target=target, name="market-replica", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self.catalogue.db.engine.dialect.name == "postgresql":
            with contextlib.suppress(Exception):  # wake the listener now rather than at its timeout
                self._notify_self()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _catch_up_logged(self) -> None:
        try:
            self.catch_up()
            if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                self._pruned_at = time.monotonic()
                before = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.retention_s)).isoformat(
                    timespec="seconds"
                )
                self.catalogue.prune_changes(before=before)
        except Exception as exc:  # the database is away: the next wake-up or poll tries again
            log.warning("cannot read the catalogue's change log: %s", exc)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._catch_up_logged()

    def _listen_loop(self) -> None:
        import psycopg

        url = make_url(self.catalogue.db.url).set(drivername="postgresql")
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    url.render_as_string(hide_password=False),
                    autocommit=True,
                    application_name="lmdock-replica",
                ) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self.listening.set()
                    self._catch_up_logged()  # whatever committed while no one listened
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.poll_s, stop_after=1):
                            pass
                        self._catch_up_logged()
            except psycopg.Error as exc:
                log.warning("lost the change notifications (%s); polling until reconnected", exc)
            finally:
                self.listening.clear()
            self._catch_up_logged()
            self._stop.wait(min(self.poll_s, 1.0))

    def _notify_self(self) -> None:
        from sqlalchemy import text

        with self.catalogue.db.engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:channel, 'stop')"), {"channel": CHANGES_CHANNEL})
