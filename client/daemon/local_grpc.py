"""The local gRPC API: the same operations as the HTTP API, plus tasks and status.

An interceptor checks the bearer token before any handler runs; handlers decode, call one
`Daemon` method and encode. The typed errors they raise become the gRPC code of the same name
(`lmdock.common.grpc_errors.ErrorStatusInterceptor`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from lmdock.client.channel import MAX_MESSAGE_BYTES
from lmdock.client.daemon import local_serde as serde
from lmdock.client.daemon.auth import bearer_matches
from lmdock.client.daemon.core import Daemon
from lmdock.client.daemon.openai_schema import COMPLETIONS_DEFAULT_MAX_TOKENS
from lmdock.common.errors import Unauthenticated
from lmdock.common.grpc_errors import ErrorStatusInterceptor
from lmdock.v1 import local_pb2 as pb
from lmdock.v1 import local_pb2_grpc as pb_grpc

__all__ = ["create_local_server"]


class _BearerAuth(grpc.ServerInterceptor):
    """Refuses every call without `authorization: Bearer <token>` metadata."""

    def __init__(self, token: str) -> None:
        self._token = token

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            raise Unauthenticated(
                "missing or wrong bearer token: send 'authorization: Bearer <token>' (see api.token_file)"
            )

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if bearer_matches(dict(details.invocation_metadata).get("authorization"), self._token):
            return handler
        # refuse with a handler of the method's own kind, so streaming callers get the status too
        return self._deny_stream if handler is not None and handler.unary_stream else self._deny


class LocalServicer(pb_grpc.LocalServiceServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[serde.task_to_pb(r) for r in self.daemon.models()])

    def Complete(self, request: pb.CompleteRequest, context: grpc.ServicerContext) -> pb.CompleteResponse:
        options = serde.options_from_pb(request.params, default_max_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS)
        return serde.completion_to_pb(self.daemon.complete(request.model, list(request.prompts), options))

    def Chat(self, request: pb.ChatRequest, context: grpc.ServicerContext) -> pb.CompleteResponse:
        default = self.daemon.config.runtime.max_new_tokens
        options = serde.options_from_pb(request.params, default_max_tokens=default)
        messages = serde.messages_from_pb(list(request.messages))
        return serde.completion_to_pb(self.daemon.chat(request.model, messages, options))

    def AddTask(self, request: pb.AddTaskRequest, context: grpc.ServicerContext) -> Iterator[pb.TaskEvent]:
        settings = serde.settings_from_pb(request.task)
        cancel = _cancel_when_gone(context)
        yield from self._events(
            lambda progress: self.daemon.add_task(
                settings, replace=request.replace, progress=progress, cancel=cancel
            ),
        )

    def RetryTask(
        self, request: pb.RetryTaskRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TaskEvent]:
        cancel = _cancel_when_gone(context)
        yield from self._events(lambda progress: self.daemon.retry_task(request.name, progress, cancel))

    def _events(self, work: Callable[[Any], Any]) -> Iterator[pb.TaskEvent]:
        """Run `work(progress)` on a thread and stream its progress, then the task it returns."""
        events: queue.Queue[pb.TaskEvent | Exception] = queue.Queue()

        def progress(stage: str, done: int, total: int) -> None:
            events.put(pb.TaskEvent(stage=stage, done=done, total=total))

        def run() -> None:
            try:
                record = work(progress)
            except Exception as exc:
                events.put(exc)
            else:
                events.put(pb.TaskEvent(stage="ready", done=1, total=1, task=serde.task_to_pb(record)))

        threading.Thread(target=run, name="task-prepare", daemon=True).start()
        while True:
            event = events.get()
            if isinstance(event, Exception):
                raise event
            yield event
            if event.HasField("task"):
                return

    def RemoveTask(
        self, request: pb.RemoveTaskRequest, context: grpc.ServicerContext
    ) -> pb.RemoveTaskResponse:
        return pb.RemoveTaskResponse(task=serde.task_to_pb(self.daemon.remove_task(request.name)))

    def ListTasks(self, request: pb.ListTasksRequest, context: grpc.ServicerContext) -> pb.ListTasksResponse:
        return pb.ListTasksResponse(tasks=[serde.task_to_pb(r) for r in self.daemon.tasks()])

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.GetStatusResponse:
        return serde.status_to_pb(self.daemon.status())


def _cancel_when_gone(context: grpc.ServicerContext) -> threading.Event:
    """A flag set when the call ends: a caller who leaves (Ctrl-C) cancels the preparation it
    asked for (set after a normal end too, when there is nothing left to stop)."""
    cancel = threading.Event()
    context.add_callback(cancel.set)
    return cancel


def create_local_server(
    daemon: Daemon, *, address: str, token: str, max_workers: int = 16
) -> tuple[grpc.Server, int]:
    """A not yet started server for `daemon` on `address`; returns it and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="local-grpc"),
        # errors first: it answers for the token check too
        interceptors=[ErrorStatusInterceptor("daemon"), _BearerAuth(token)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    pb_grpc.add_LocalServiceServicer_to_server(LocalServicer(daemon), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port
