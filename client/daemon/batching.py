"""Micro-batching: requests for one base model queue up and run together.

One worker thread per loaded base model takes the first waiting job, waits up to `wait_s` for
more (at most `max_batch` texts), and runs as one batch the jobs that ask the same thing: a
classifier's jobs for the same adapter (its head is its own), generation jobs with the same
options whatever their adapters (`SharedBase.generate` gives each row its own LoRA). A
generation job's text goes to its own `on_text` as it is decoded, its rows stop decoding once
that listener has gone, and its answer is ready as soon as its own rows end, whatever the rest
of the batch still does. When a batch fails, its jobs run again one by one, so a bad input fails
only its own request (a job that has streamed text already fails instead: its caller has seen
part of an answer). The single worker also serializes the base's use, so one batch's adapters
never leak into another's.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from lmdock.client.answers import Generation, GenerationOptions, TextListener
from lmdock.client.runtime import SharedBase
from lmdock.common.errors import LmdockError

__all__ = ["Batcher"]

log = logging.getLogger(__name__)


@dataclass
class _Job:
    name: str
    options: GenerationOptions | None  # None: classification
    inputs: list[str]
    on_text: TextListener | None = None  # called from the worker
    future: Future[list[Any]] = field(default_factory=Future)
    streamed: bool = False  # some text went to `on_text`

    @property
    def key(self) -> tuple[str, GenerationOptions | None]:
        """What jobs of one batch share: a classifier's adapter, or generation options alone."""
        return (self.name if self.options is None else "", self.options)


class Batcher:
    def __init__(self, host: SharedBase, *, max_batch: int, wait_s: float) -> None:
        self.host = host
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.batches_run = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{host.base_model}", daemon=True)
        self._thread.start()

    def submit(
        self,
        name: str,
        inputs: Sequence[str],
        options: GenerationOptions | None,
        on_text: TextListener | None = None,
    ) -> Future[list[Any]]:
        """Queue `inputs` for adapter `name`: classification when `options` is None, else generation
        (whose text goes to `on_text` as it is decoded)."""
        job = _Job(name, options, list(inputs), on_text)
        self._queue.put(job)
        return job.future

    def _count_batch(self) -> None:
        # before the batch's last answer is handed over: whoever has every answer sees the count
        self.batches_run += 1

    def close(self) -> None:
        """Finish the jobs already queued, then stop the worker."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._gather(first)
            for group in _group(jobs):
                self._run(group)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, size = [first], len(first.inputs)
        deadline = time.monotonic() + self.wait_s
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            size += len(job.inputs)
        return jobs, False

    def _run(self, group: list[_Job]) -> None:
        options = group[0].options
        inputs = [text for job in group for text in job.inputs]
        try:
            if options is None:
                results: list[Any] = self.host.classify(group[0].name, inputs, batch_size=self.max_batch)
            else:
                sink = _JobSink(group, on_last_row=self._count_batch)
                names = [job.name for job in group for _ in job.inputs]
                results = self.host.generate(names, inputs, options, batch_size=self.max_batch, sink=sink)
        except Exception as exc:
            pending = [job for job in group if not job.future.done()]
            if len(group) > 1:  # one caller's input must not fail the others: each on its own
                log.warning(
                    "a batch of %d requests failed (%s); running them one by one",
                    len(group),
                    type(exc).__name__,
                )
                for job in pending:
                    if job.streamed:
                        job.future.set_exception(exc)
                    else:
                        self._run([job])
                return
            if not isinstance(exc, LmdockError):  # a typed error is the caller's; anything else ours
                log.exception("inference failed on base %s (%s)", self.host.base_model, type(exc).__name__)
            for job in pending:
                job.future.set_exception(exc)
            return
        if options is None:
            self._count_batch()
        start = 0
        for job in group:
            if not job.future.done():
                job.future.set_result(results[start : start + len(job.inputs)])
            start += len(job.inputs)


class _JobSink:
    """Routes a batch's rows to their jobs; a job is answered once its last row is done.

    `on_last_row` runs when the batch's last row is done, before that row's job is answered.
    """

    def __init__(self, group: list[_Job], *, on_last_row: Callable[[], None]) -> None:
        self.rows = [(job, i) for job in group for i in range(len(job.inputs))]
        self.answers: dict[int, dict[int, Generation]] = {id(job): {} for job in group}
        self.remaining = len(self.rows)
        self.on_last_row = on_last_row

    def text(self, row: int, delta: str) -> None:
        job, i = self.rows[row]
        if job.on_text is not None:
            job.streamed = True
            job.on_text(i, delta)

    def wanted(self, row: int) -> bool:
        listener = self.rows[row][0].on_text
        return listener is None or listener.listening

    def done(self, row: int, generation: Generation) -> None:
        job, i = self.rows[row]
        answers = self.answers[id(job)]
        answers[i] = generation
        self.remaining -= 1
        if not self.remaining:
            self.on_last_row()
        if len(answers) == len(job.inputs):
            job.future.set_result([answers[k] for k in range(len(job.inputs))])


def _group(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs that share a batch (`_Job.key`) together, in order of first arrival."""
    groups: dict[tuple[str, GenerationOptions | None], list[_Job]] = {}
    for job in jobs:
        groups.setdefault(job.key, []).append(job)
    return list(groups.values())
