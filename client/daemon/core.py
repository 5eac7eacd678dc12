"""The daemon's operations, shared by its HTTP and gRPC front ends.

`Daemon` owns the task registry, the adapter cache, the preparer and the model pool. The
front ends decode a request, call one method here and encode the answer; every method raises
lmdock's typed errors, which each front end maps once to its status codes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence

from lmdock.client import embedding_checkpoint
from lmdock.client.answers import Classification, Generation, GenerationOptions, TextListener
from lmdock.client.cache import AdapterCache
from lmdock.client.daemon.batching import Batcher
from lmdock.client.daemon.config import DaemonConfig, TaskSettings
from lmdock.client.daemon.pool import ModelPool
from lmdock.client.daemon.preparation import Preparer
from lmdock.client.daemon.registry import TaskRecord, TaskRegistry
from lmdock.client.daemon.types import ChatMessage, Completion, DaemonStatus
from lmdock.client.progress import StageProgress
from lmdock.common.errors import FailedPrecondition, InvalidArgument, LmdockError, ResourceExhausted

__all__ = ["Daemon"]

log = logging.getLogger(__name__)
CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")
STOP_WAIT_S = 30.0  # the longest a stop or a removal waits for a cancelled preparation


class Daemon:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.cache = AdapterCache(config.cache_dir)
        self.registry = TaskRegistry(config.state_dir / "tasks.json")
        self.preparer = Preparer(config, self.registry, self.cache)
        self.pool = ModelPool(config.runtime, base_models=config.base_models)
        self.started_at = time.time()
        self.http_address = ""
        self.grpc_address = ""
        self._in_flight = threading.BoundedSemaphore(config.api.max_concurrent)
        self._preparing: dict[str, threading.Event] = {}  # task name -> its cancel flag
        self._preparing_lock = threading.Condition()  # notified when a preparation ends
        self._stopping = threading.Event()

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Register the config's tasks and prepare, in the background, those not ready yet.

        A task whose preparation failed stays failed until `retry_task` (no budget is spent
        again on its own); an interrupted one (daemon stopped while preparing) starts over. Ready
        tasks are checked against the market's key revocations first, when it answers.
        """
        for settings in self.config.tasks:
            old = self._find(settings.name)
            if old is None or old.settings != settings:
                self.registry.add(settings, replace=True)
        pending = [r.name for r in self.registry.all() if r.state in ("registered", "preparing")]
        # A daemon thread: stopping never waits for a long download; an interrupted task is
        # left "preparing" and starts over at the next start (downloads resume).
        threading.Thread(target=self._background, args=(pending,), name="prepare", daemon=True).start()

    def _background(self, names: list[str]) -> None:
        """Check revocations for the ready tasks (when the market answers), then prepare `names`."""
        for name in self.preparer.refresh_revocations():
            self.pool.unload(self.registry.get(name).learnware_id)
        for name in names:
            if self._stopping.is_set():
                return
            with contextlib.suppress(LmdockError):  # recorded as failed in the registry, and logged
                self.prepare_task(name)

    def stop_preparing(self) -> None:
        """Cancel the preparations under way and wait for them to stop (within one embedding
        batch or download chunk); they start over at the next start."""
        self._stopping.set()
        with self._preparing_lock:
            for cancel in self._preparing.values():
                cancel.set()
            if not self._preparing_lock.wait_for(lambda: not self._preparing, timeout=STOP_WAIT_S):
                log.warning("preparations still running at stop: %s", ", ".join(self._preparing))

    def close(self) -> None:
        self.stop_preparing()
        self.pool.close()

    # -- tasks ----------------------------------------------------------------------------

    def add_task(
        self,
        settings: TaskSettings,
        *,
        replace: bool = False,
        progress: StageProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> TaskRecord:
        """Register and prepare a task; `cancel`, once set, stops the preparation (Cancelled).
        Whatever makes it fail, the tasks are left as they were."""
        with self._preparing_lock:
            if settings.name in self._preparing:
                raise FailedPrecondition(f"task {settings.name!r} is being prepared; wait for it to finish")
            old = self._find(settings.name)
            self.registry.add(settings, replace=replace)
        if old is not None:
            self._unload_unused(old.learnware_id)
        try:
            return self.prepare_task(settings.name, progress, cancel)
        except LmdockError:
            # a failed add leaves the tasks as they were: the corrected command is not refused
            # (a release it made stays in the ledger, and the same data re-sends it at no cost)
            with self._preparing_lock:
                if settings.name not in self._preparing:
                    self.registry.restore(settings.name, old)
            raise

    def retry_task(
        self, name: str, progress: StageProgress | None = None, cancel: threading.Event | None = None
    ) -> TaskRecord:
        record = self.registry.get(name)
        if record.state == "ready":
            raise FailedPrecondition(f"task {name!r} is ready; to search again, add it with --replace")
        return self.prepare_task(name, progress, cancel)

    def prepare_task(
        self, name: str, progress: StageProgress | None = None, cancel: threading.Event | None = None
    ) -> TaskRecord:
        cancel = cancel or threading.Event()
        with self._preparing_lock:
            if name in self._preparing:
                raise FailedPrecondition(f"task {name!r} is being prepared already")
            self._preparing[name] = cancel
        try:
            return self.preparer.prepare(name, progress, cancel=cancel)
        finally:
            with self._preparing_lock:
                del self._preparing[name]
                self._preparing_lock.notify_all()

    def remove_task(self, name: str) -> TaskRecord:
        """Stop serving a task; one being prepared is cancelled first (nothing more is released)."""
        with self._preparing_lock:
            record = self.registry.get(name)
            if name in self._preparing:
                self._preparing[name].set()
                if not self._preparing_lock.wait_for(lambda: name not in self._preparing, STOP_WAIT_S):
                    raise FailedPrecondition(f"task {name!r} is still stopping its preparation; try again")
            if self._find(name) is not None:  # a cancelled add has put back what was there: none
                record = self.registry.remove(name)
            embedding_checkpoint.discard(self.preparer.embeddings(name))
        self._unload_unused(record.learnware_id)
        return record

    def tasks(self) -> list[TaskRecord]:
        return self.registry.all()

    def _find(self, name: str) -> TaskRecord | None:
        return next((r for r in self.registry.all() if r.name == name), None)

    def _unload_unused(self, learnware_id: str) -> None:
        if learnware_id and learnware_id not in self.preparer.in_use():
            self.pool.unload(learnware_id)

    # -- inference --------------------------------------------------------------------------

    def models(self) -> list[TaskRecord]:
        """The tasks that can answer now (the OpenAI API's models)."""
        return [r for r in self.registry.all() if r.state == "ready"]

    def complete(
        self,
        model: str,
        prompts: Sequence[str],
        options: GenerationOptions,
        on_text: TextListener | None = None,
    ) -> Completion:
        """Answer each prompt; a generation's text also goes to `on_text` (prompt's index, text)
        as it is decoded, from a worker thread, until it stops listening."""
        if not prompts:
            raise InvalidArgument("prompt is empty")
        if len(prompts) > self.config.api.max_prompts:
            raise InvalidArgument(
                f"at most {self.config.api.max_prompts} prompts per request (api.max_prompts)",
                param="prompt",
            )
        record = self.ready(model)
        if not self._in_flight.acquire(blocking=False):
            raise ResourceExhausted(
                f"{self.config.api.max_concurrent} requests are in flight (api.max_concurrent); retry shortly"
            )
        try:
            batcher = self._loaded(record)
            job = None if record.kind == "classification" else options
            if job is not None and not job.fit:
                self._check_room(batcher.host.max_positions, job.max_new_tokens)
            choices: list[Classification | Generation] = batcher.submit(
                record.learnware_id, prompts, job, on_text
            ).result()
        finally:
            self._in_flight.release()
        prompt_tokens = sum(c.prompt_tokens for c in choices)
        completion_tokens = sum(c.completion_tokens for c in choices if isinstance(c, Generation))
        return Completion(
            model, record.learnware_id, record.kind, tuple(choices), prompt_tokens, completion_tokens
        )

    def _check_room(self, positions: int, max_new_tokens: int) -> None:
        """Refuse more new tokens than the config allows or the model has room for (one is the prompt's)."""
        limit = min(self.config.runtime.max_new_tokens, positions - 1)
        if not 1 <= max_new_tokens <= limit:
            why = "runtime.max_new_tokens" if limit == self.config.runtime.max_new_tokens else "the model's"
            raise InvalidArgument(
                f"max_tokens is {max_new_tokens}; it must be between 1 and {limit} ({why} limit)",
                param="max_tokens",
            )

    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        on_text: TextListener | None = None,
    ) -> Completion:
        """A chat turn; a classifier labels the last user message."""
        if not messages:
            raise InvalidArgument("messages is empty", param="messages")
        for i, message in enumerate(messages):
            if message.role not in CHAT_ROLES:
                raise InvalidArgument(
                    f"message role must be one of {', '.join(CHAT_ROLES)}, not {message.role!r}",
                    param=f"messages[{i}].role",
                )
        record = self.ready(model)
        if record.kind == "classification":
            user = [m.content for m in messages if m.role == "user"]
            if not user:
                raise InvalidArgument(
                    "a classifier labels the last user message; the chat has none", param="messages"
                )
            return self.complete(model, [user[-1]], options)
        prompt = self._loaded(record).host.chat_prompt(
            [{"role": m.role, "content": m.content} for m in messages]
        )
        return self.complete(model, [prompt], options, on_text)

    def ready(self, model: str) -> TaskRecord:
        """The task named `model`, if it can answer now (NotFound, FailedPrecondition otherwise)."""
        record = self.registry.get(model)
        if record.state != "ready":
            detail = f" ({record.stage})" if record.stage else (f": {record.error}" if record.error else "")
            hint = (
                "try again when it is ready"
                if record.state != "failed"
                else f"see `lmdock task show {model}`"
            )
            raise FailedPrecondition(f"task {model!r} is {record.state}{detail}; {hint}")
        return record

    def _loaded(self, record: TaskRecord) -> Batcher:
        """The batcher serving the task's learnware, loading (and verifying) it first if needed."""
        for _ in range(2):  # another base's load can unload this one in between: load it again once
            if not self.pool.is_loaded(record.learnware_id):
                manifest = self.preparer.verified(record.learnware_id)
                self.pool.load(record.learnware_id, self.cache.folder(record.learnware_id), manifest)
            try:
                return self.pool.batcher(record.learnware_id)
            except KeyError:
                continue
        raise ResourceExhausted("models keep replacing each other in memory; raise runtime.max_loaded_bases")

    # -- status ------------------------------------------------------------------------------

    def status(self) -> DaemonStatus:
        entries = self.cache.entries()
        return DaemonStatus(
            pid=os.getpid(),
            started_at=self.started_at,
            market=self.config.market.address,
            http_address=self.http_address,
            grpc_address=self.grpc_address,
            cache_dir=str(self.cache.root),
            cache_bytes=sum(e.size for e in entries),
            cache_max_bytes=self.config.cache.max_bytes,
            cached_learnwares=len(entries),
            repairs=self.preparer.repairs,
            tasks=tuple(self.registry.all()),
            loaded=tuple(self.pool.describe()),
        )
