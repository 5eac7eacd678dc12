"""Preparing a task: read its data, release its DP spec, search, pull the best learnware.

Only the spec leaves the machine. The privacy parameters come from the task (or the
`[privacy]` defaults); `_search` is the one place a release happens, and it goes through the
client's privacy ledger with the configured budget per data set. After preparation the task
is served from the cache: `verified` re-checks a cached learnware before every load and, when
it fails, evicts it and downloads it again — a damaged file is never loaded.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from lmdock.client import embedding_checkpoint
from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient, WireRecorder
from lmdock.client.daemon.config import DaemonConfig, TaskSettings
from lmdock.client.daemon.market_link import connect, fetch_learnware
from lmdock.client.daemon.registry import TaskRecord, TaskRegistry
from lmdock.client.ledger import Ledger
from lmdock.client.operations import SearchOutcome, search_task
from lmdock.client.progress import Progress, StageProgress
from lmdock.client.task import Columns, TaskData
from lmdock.client.task.read import read_task_file
from lmdock.common.accounting import Budget
from lmdock.common.errors import (
    Cancelled,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    LmdockError,
    NotFound,
)
from lmdock.common.package import Manifest

__all__ = ["Preparer"]

log = logging.getLogger(__name__)


def _quiet(stage: str, done: int, total: int) -> None:
    """The progress sink when nobody watches."""


def _cancellable(name: str, progress: StageProgress, cancel: threading.Event) -> StageProgress:
    """`progress`, raising Cancelled at the first report after `cancel` is set."""

    def report(stage: str, done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled(f"task {name!r} was cancelled while {stage}; nothing was released since")
        progress(stage, done, total)

    return report


class Preparer:
    def __init__(self, config: DaemonConfig, registry: TaskRegistry, cache: AdapterCache) -> None:
        self.config = config
        self.registry = registry
        self.cache = cache
        privacy = config.privacy
        self.ledger = Ledger(
            config.ledger_path,
            anchor=Path(privacy.ledger_anchor) if privacy.ledger_anchor else None,
            budget=Budget(epsilon=privacy.budget_epsilon, delta=privacy.budget_delta),
        )
        self.repairs = 0  # cached learnwares that failed verification and were downloaded again

    def prepare(
        self, name: str, progress: StageProgress | None = None, *, cancel: threading.Event | None = None
    ) -> TaskRecord:
        """Take task `name` from registered (or failed) to ready; on error it is marked failed.

        Once `cancel` is set, the next progress report (each embedding batch, each download
        chunk) raises Cancelled: embedding stops before anything is released, and the task
        is left registered, to be prepared again at the next start.
        """
        watched = _cancellable(name, progress or _quiet, cancel or threading.Event())
        settings = self.registry.get(name).settings
        self.registry.update(name, state="preparing", stage="reading", error="")
        recorder = WireRecorder()  # counts every byte this preparation sends to the market
        try:
            record = self._prepare(settings, watched, recorder)
        except Cancelled:
            self.registry.update(name, state="registered", stage="", bytes_sent=recorder.bytes_sent)
            log.info("task %s: preparation cancelled", name)
            raise
        except LmdockError as exc:
            self.registry.update(
                name, state="failed", stage="", error=str(exc), bytes_sent=recorder.bytes_sent
            )
            log.warning("task %s failed: %s", name, exc)
            raise
        evicted = self.cache.enforce_cap(self.config.cache.max_bytes, keep=self.in_use())
        if evicted:
            log.info("cache over %d bytes: evicted %s", self.config.cache.max_bytes, ", ".join(evicted))
        return record

    def _prepare(self, settings: TaskSettings, progress: StageProgress, recorder: WireRecorder) -> TaskRecord:
        name = settings.name
        changes: dict[str, object] = {}
        if settings.learnware:
            chosen = settings.learnware  # pinned by the user: no search, nothing released
        else:
            progress("reading", 0, 1)
            task = self._read(settings)
            self.registry.update(name, stage="embedding", records=len(task.texts))
            progress("embedding", 0, len(task.texts))
            with connect(self.config.market, recorder=recorder) as client:
                outcome = self._search(client, task, settings, progress)
            spec, result, debit = outcome.spec, outcome.result, outcome.debit
            assert debit is not None  # the daemon always searches with its ledger
            if not result.matches:
                raise NotFound("the market has no learnware to offer for this task")
            chosen = result.matches[0].learnware_id
            changes = {
                "matches": tuple((m.learnware_id, m.score) for m in result.matches),
                "epsilon_spent": spec.privacy.epsilon,
                "delta_spent": spec.privacy.delta,
                "budget_spent": debit.spent.epsilon,
                "budget_delta": debit.spent.delta,
            }
        self.registry.update(name, stage="downloading", learnware_id=chosen, **changes)
        manifest = self._fetch(chosen, recorder, lambda done, total: progress("downloading", done, total))
        with connect(self.config.market, recorder=recorder) as client:
            self._refuse_revoked(client, manifest.card.id, manifest.card.publisher)
        log.info("task %s: learnware %s by %s is ready", name, manifest.card.id, manifest.card.publisher)
        progress("ready", 1, 1)
        return self.registry.update(
            name,
            state="ready",
            stage="",
            kind=manifest.task.kind,
            labels=manifest.task.labels,
            base_model=manifest.base_model,
            publisher=manifest.card.publisher,
            bytes_sent=recorder.bytes_sent,
        )

    def _read(self, settings: TaskSettings) -> TaskData:
        return read_task_file(
            Path(settings.data),
            format=settings.format,
            columns=Columns(
                text=settings.text_column,
                label=settings.label_column,
                answer=settings.answer_column,
                person=settings.person_column,
            ),
            min_records=self.config.privacy.min_records,
        )

    def _search(
        self, client: MarketClient, task: TaskData, settings: TaskSettings, progress: StageProgress
    ) -> SearchOutcome:
        """The task's one release: its DP spec, computed here, is all that is sent.

        The ledger debits the data set before anything is sent and refuses a release over its
        budget (BudgetExceeded: no request leaves); a release already made for the same records
        and parameters is re-sent from the ledger at no cost. A person column makes the person
        the privacy unit.
        """
        epsilon = settings.epsilon or self.config.privacy.epsilon
        delta = settings.delta or self.config.privacy.delta

        def embedding(done: int, total: int) -> None:
            progress("embedding", done, total)
            if done >= total:
                progress("searching", 0, 1)

        outcome = search_task(
            client,
            task.texts,
            epsilon=epsilon,
            delta=delta,
            top_k=settings.top_k,
            progress=embedding,
            ledger=self.ledger,
            persons=task.persons,
            dataset=settings.name,  # the task's data set is named after it
            checkpoint=self.embeddings(settings.name),  # a stopped daemon resumes from it
        )
        embedding_checkpoint.discard(self.embeddings(settings.name))  # released: no longer needed
        log.info(
            "task %s: spec sent (%d bytes so far), %d learnware(s) ranked",
            settings.name,
            client.bytes_sent,
            len(outcome.result.matches),
        )
        return outcome

    def embeddings(self, name: str) -> Path:
        """Where task `name`'s embedding saves its progress (owner-only; deleted once released)."""
        return self.config.state_dir / "embedding" / f"{name}.f32"

    def verified(self, learnware_id: str) -> Manifest:
        """The cached learnware, checked (sha256 + pinned signature, no market needed).

        A learnware that fails the check is evicted and downloaded again; without a market the
        task cannot be served until it is reachable.
        """
        try:
            return self.cache.load(learnware_id)
        except (IntegrityError, InvalidArgument, NotFound) as exc:
            log.warning(
                "cached learnware %s failed verification (%s); downloading it again", learnware_id, exc
            )
            self.cache.evict(learnware_id)
            reason = exc
        try:
            self._fetch(learnware_id, WireRecorder())
        except LmdockError as exc:
            raise FailedPrecondition(
                f"cached learnware {learnware_id!r} failed verification ({reason}) and could not be "
                f"downloaded again ({exc}); the next request tries again"
            ) from None
        self.repairs += 1
        return self.cache.load(learnware_id)

    def _fetch(self, learnware_id: str, recorder: WireRecorder, progress: Progress | None = None) -> Manifest:
        market = self.config.market
        return fetch_learnware(
            lambda: connect(market, recorder=recorder),
            self.cache,
            learnware_id,
            attempts=market.attempts,
            backoff_s=market.backoff_s,
            progress=progress,
        )

    def _refuse_revoked(self, client: MarketClient, learnware_id: str, publisher: str) -> None:
        """Evict and refuse a learnware whose publisher revoked the key that signed it.

        The cache pins the key each publisher signed with; the market lists revocations.
        """
        pinned = self.cache.pinned_key(publisher)
        for key in client.signing_keys(publisher):
            if key.revoked and key.public_key == pinned:
                self.cache.evict(learnware_id)
                raise IntegrityError(
                    f"publisher {publisher!r} revoked the key that signed learnware {learnware_id!r} "
                    f"(at {key.revoked_at}); it was removed from the cache"
                )

    def refresh_revocations(self) -> list[str]:
        """Check the ready tasks' learnwares against the market's revocations, when it answers.

        A task whose learnware's signing key was revoked is marked failed (returns their names);
        without a market the cache keeps serving.
        """
        ready = [r for r in self.registry.all() if r.state == "ready"]
        if not ready or not self.config.market.address:
            return []
        revoked = []
        try:
            with connect(self.config.market) as client:
                for record in ready:
                    try:
                        self._refuse_revoked(client, record.learnware_id, record.publisher)
                    except IntegrityError as exc:
                        log.warning("task %s: %s", record.name, exc)
                        self.registry.update(record.name, state="failed", error=str(exc))
                        revoked.append(record.name)
        except LmdockError as exc:
            log.info("revocations not checked (%s); serving from the cache", exc)
        return revoked

    def in_use(self) -> frozenset[str]:
        return frozenset(r.learnware_id for r in self.registry.all() if r.learnware_id)
