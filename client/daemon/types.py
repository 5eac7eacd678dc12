"""The daemon's records: what its operations take and return (no model libraries imported)."""

from __future__ import annotations

from dataclasses import dataclass

from lmdock.client.answers import Classification, Generation
from lmdock.client.daemon.registry import TaskRecord

__all__ = ["ChatMessage", "Completion", "DaemonStatus", "LoadedBase"]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class Completion:
    model: str
    learnware_id: str
    kind: str
    choices: tuple[Classification | Generation, ...]
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class DaemonStatus:
    pid: int
    started_at: float
    market: str
    http_address: str
    grpc_address: str
    cache_dir: str
    cache_bytes: int
    cache_max_bytes: int
    cached_learnwares: int
    repairs: int
    tasks: tuple[TaskRecord, ...]
    loaded: tuple[LoadedBase, ...]


@dataclass(frozen=True)
class LoadedBase:
    base_model: str
    kind: str
    device: str
    dtype: str
    learnwares: tuple[str, ...]
    batches_run: int
