"""A client for a running daemon's local gRPC API (what `lmdock status` and `lmdock task` use)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from lmdock.client.answers import GenerationOptions
from lmdock.client.daemon import local_serde as serde
from lmdock.client.daemon.auth import read_token
from lmdock.client.daemon.config import DaemonConfig, TaskSettings
from lmdock.client.daemon.registry import TaskRecord
from lmdock.client.daemon.runfile import read_runfile
from lmdock.client.daemon.types import ChatMessage, Completion, DaemonStatus
from lmdock.client.progress import StageProgress
from lmdock.common.errors import (
    BudgetExceeded,
    FailedPrecondition,
    LmdockError,
    Unavailable,
    error_for_status,
)
from lmdock.common.grpc_errors import TypedErrorsInterceptor
from lmdock.v1 import local_pb2 as pb
from lmdock.v1 import local_pb2_grpc as pb_grpc

__all__ = ["LocalClient"]


class LocalClient:
    def __init__(self, address: str, token: str, *, http_address: str = "", timeout: float = 600.0) -> None:
        self.address = address
        self.http_address = http_address  # the daemon's HTTP API, when known from its run file
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channel = grpc.intercept_channel(
            grpc.insecure_channel(address), TypedErrorsInterceptor(self._error)
        )
        self._stub = pb_grpc.LocalServiceStub(self._channel)

    @classmethod
    def for_config(
        cls, config: DaemonConfig, *, config_hint: str = "lmdock.toml", timeout: float = 600.0
    ) -> LocalClient:
        """Find the daemon that runs with `config` (its run file) and authenticate with its token."""
        info = read_runfile(config.state_dir, config_hint=config_hint)
        return cls(info.grpc, read_token(config.token_file), http_address=info.http, timeout=timeout)

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    def _error(self, status: str, details: str) -> LmdockError:
        # the daemon's own word that the market is down starts "market: " (MarketClient's errors)
        if status == "UNAVAILABLE" and not details.startswith("market"):
            return Unavailable(f"the daemon at {self.address} does not answer; is it still running?")
        if status == "RESOURCE_EXHAUSTED" and details.startswith("privacy budget"):
            return BudgetExceeded(details)  # the ledger's refusal, which a status alone cannot tell apart
        return error_for_status(status, details)

    def _unary(self, method: Any, request: Any) -> Any:
        return method(request, timeout=self.timeout, metadata=self._metadata)

    def status(self) -> DaemonStatus:
        return serde.status_from_pb(self._unary(self._stub.GetStatus, pb.GetStatusRequest()))

    def tasks(self) -> list[TaskRecord]:
        return [serde.task_from_pb(t) for t in self._unary(self._stub.ListTasks, pb.ListTasksRequest()).tasks]

    def models(self) -> list[TaskRecord]:
        return [
            serde.task_from_pb(t) for t in self._unary(self._stub.ListModels, pb.ListModelsRequest()).models
        ]

    def remove_task(self, name: str) -> TaskRecord:
        return serde.task_from_pb(self._unary(self._stub.RemoveTask, pb.RemoveTaskRequest(name=name)).task)

    def add_task(
        self, settings: TaskSettings, *, replace: bool = False, progress: StageProgress | None = None
    ) -> TaskRecord:
        request = pb.AddTaskRequest(task=serde.settings_to_pb(settings), replace=replace)
        return self._follow(self._stub.AddTask, request, progress)

    def retry_task(self, name: str, *, progress: StageProgress | None = None) -> TaskRecord:
        return self._follow(self._stub.RetryTask, pb.RetryTaskRequest(name=name), progress)

    def _follow(self, method: Any, request: Any, progress: StageProgress | None) -> TaskRecord:
        # no deadline: a large task embeds for long, and its progress shows it is alive
        events: Iterator[pb.TaskEvent] = method(request, metadata=self._metadata)
        for event in events:
            if progress is not None:
                progress(event.stage, event.done, event.total)
            if event.HasField("task"):
                return serde.task_from_pb(event.task)
        raise FailedPrecondition("the daemon ended the task's progress stream without an answer")

    def complete(self, model: str, prompts: list[str], options: GenerationOptions) -> Completion:
        request = pb.CompleteRequest(model=model, prompts=prompts, params=serde.options_to_pb(options))
        return serde.completion_from_pb(self._unary(self._stub.Complete, request))

    def chat(self, model: str, messages: list[ChatMessage], options: GenerationOptions) -> Completion:
        request = pb.ChatRequest(
            model=model,
            messages=[pb.ChatMessage(role=m.role, content=m.content) for m in messages],
            params=serde.options_to_pb(options),
        )
        return serde.completion_from_pb(self._unary(self._stub.Chat, request))
