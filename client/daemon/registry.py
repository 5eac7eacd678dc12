"""The daemon's task registry: what each task is and how far it got, kept in one JSON file.

A task moves registered -> preparing -> ready (or failed). The file is rewritten atomically on
every change, so a crash leaves the previous state, and a restarted daemon serves ready tasks
from the cache without searching (or spending privacy) again. Records hold ids, scores and
privacy figures, never task texts.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdock.client.daemon.config import TaskSettings
from lmdock.client.files import atomic_write_text
from lmdock.common.errors import AlreadyExists, IntegrityError, NotFound

__all__ = ["TaskRecord", "TaskRegistry"]

_FILE_VERSION = 1


@dataclass(frozen=True)
class TaskRecord:
    settings: TaskSettings
    state: str = "registered"  # then preparing, and ready or failed
    stage: str = ""  # while preparing: reading, embedding, searching, downloading, verifying
    learnware_id: str = ""
    kind: str = ""  # classification or generation, once a learnware is chosen
    labels: tuple[str, ...] = ()
    base_model: str = ""
    publisher: str = ""
    records: int = 0
    matches: tuple[tuple[str, float], ...] = ()  # (learnware id, score) as the market ranked them
    epsilon_spent: float = 0.0
    delta_spent: float = 0.0
    budget_spent: float = 0.0  # epsilon the task's data set has spent in all, per the ledger
    budget_delta: float = 0.0  # the delta at which budget_spent holds
    bytes_sent: int = 0  # request bytes the last preparation sent to the market (spec included)
    error: str = ""
    updated_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.settings.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name} | dataclasses.asdict(self) | {"matches": [list(m) for m in self.matches]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskRecord:
        values = dict(data)
        values.pop("name", None)  # a copy of settings.name, for readers of the JSON
        values["settings"] = TaskSettings(**values["settings"])
        values["labels"] = tuple(values.get("labels", ()))
        values["matches"] = tuple((str(i), float(s)) for i, s in values.get("matches", ()))
        return cls(**values)


class TaskRegistry:
    """Thread-safe map of task name -> record, persisted to `path` on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskRecord] = self._read()

    def _read(self) -> dict[str, TaskRecord]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != _FILE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            records = [TaskRecord.from_dict(t) for t in data["tasks"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"task registry {self.path} is damaged ({exc}); move it aside and add the tasks again"
            ) from None
        return {r.name: r for r in records}

    def _write(self) -> None:
        tasks = [self._tasks[name].to_dict() for name in sorted(self._tasks)]
        atomic_write_text(self.path, json.dumps({"version": _FILE_VERSION, "tasks": tasks}, indent=2))

    def get(self, name: str) -> TaskRecord:
        with self._lock:
            if name not in self._tasks:
                known = ", ".join(sorted(self._tasks)) or "none yet"
                raise NotFound(f"no task named {name!r} (tasks: {known}); add it with `lmdock task add`")
            return self._tasks[name]

    def all(self) -> list[TaskRecord]:
        with self._lock:
            return [self._tasks[name] for name in sorted(self._tasks)]

    def add(self, settings: TaskSettings, *, replace: bool = False) -> TaskRecord:
        with self._lock:
            old = self._tasks.get(settings.name)
            if old is not None and not replace:
                raise AlreadyExists(
                    f"task {settings.name!r} exists ({old.state}); remove it with "
                    f"`lmdock task remove {settings.name}` or pass --replace"
                )
            record = TaskRecord(settings=settings)
            self._tasks[settings.name] = record
            self._write()
            return record

    def restore(self, name: str, record: TaskRecord | None) -> None:
        """Put back what task `name` was before an add (None: no such task)."""
        with self._lock:
            if record is None:
                self._tasks.pop(name, None)
            else:
                self._tasks[name] = record
            self._write()

    def update(self, name: str, **changes: Any) -> TaskRecord:
        with self._lock:
            if name not in self._tasks:
                raise NotFound(f"task {name!r} was removed")
            record = dataclasses.replace(self._tasks[name], **changes, updated_at=time.time())
            self._tasks[name] = record
            self._write()
            return record

    def remove(self, name: str) -> TaskRecord:
        with self._lock:
            if name not in self._tasks:
                raise NotFound(f"no task named {name!r}")
            record = self._tasks.pop(name)
            self._write()
            return record
