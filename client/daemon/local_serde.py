"""Conversions between the local API's proto messages and the daemon's domain types."""

from __future__ import annotations

import dataclasses

from lmdock.client.answers import Classification, Generation, GenerationOptions
from lmdock.client.daemon.config import TaskSettings
from lmdock.client.daemon.registry import TaskRecord
from lmdock.client.daemon.types import ChatMessage, Completion, DaemonStatus, LoadedBase
from lmdock.v1 import local_pb2 as pb

__all__ = [
    "completion_from_pb",
    "completion_to_pb",
    "messages_from_pb",
    "options_from_pb",
    "options_to_pb",
    "settings_from_pb",
    "settings_to_pb",
    "status_from_pb",
    "status_to_pb",
    "task_from_pb",
    "task_to_pb",
]

_SETTINGS_FIELDS = [f.name for f in dataclasses.fields(TaskSettings)]
_SETTINGS_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(TaskSettings) if f.default is not dataclasses.MISSING
}


def settings_to_pb(settings: TaskSettings) -> pb.TaskSource:
    return pb.TaskSource(**{name: getattr(settings, name) for name in _SETTINGS_FIELDS})


def settings_from_pb(message: pb.TaskSource) -> TaskSettings:
    """Validated settings (TaskSettings checks every field); unset fields take their defaults."""
    values = {name: getattr(message, name) for name in _SETTINGS_FIELDS}
    return TaskSettings(**{k: v or _SETTINGS_DEFAULTS.get(k, v) for k, v in values.items()})


def task_to_pb(record: TaskRecord) -> pb.LocalTask:
    return pb.LocalTask(
        source=settings_to_pb(record.settings),
        state=record.state,
        stage=record.stage,
        learnware_id=record.learnware_id,
        kind=record.kind,
        labels=list(record.labels),
        base_model=record.base_model,
        publisher=record.publisher,
        records=record.records,
        matches=[pb.TaskMatch(learnware_id=i, score=s) for i, s in record.matches],
        epsilon_spent=record.epsilon_spent,
        delta_spent=record.delta_spent,
        bytes_sent=record.bytes_sent,
        budget_spent=record.budget_spent,
        budget_delta=record.budget_delta,
        error=record.error,
        updated_at=record.updated_at,
    )


def task_from_pb(message: pb.LocalTask) -> TaskRecord:
    return TaskRecord(
        settings=settings_from_pb(message.source),
        state=message.state,
        stage=message.stage,
        learnware_id=message.learnware_id,
        kind=message.kind,
        labels=tuple(message.labels),
        base_model=message.base_model,
        publisher=message.publisher,
        records=message.records,
        matches=tuple((m.learnware_id, m.score) for m in message.matches),
        epsilon_spent=message.epsilon_spent,
        delta_spent=message.delta_spent,
        bytes_sent=message.bytes_sent,
        budget_spent=message.budget_spent,
        budget_delta=message.budget_delta,
        error=message.error,
        updated_at=message.updated_at,
    )


def options_to_pb(options: GenerationOptions) -> pb.GenerationParams:
    return pb.GenerationParams(
        max_tokens=options.max_new_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
        stop=list(options.stop),
    )


def options_from_pb(message: pb.GenerationParams, *, default_max_tokens: int) -> GenerationOptions:
    return GenerationOptions(
        max_new_tokens=message.max_tokens or default_max_tokens,
        temperature=message.temperature,
        top_p=message.top_p or 1.0,
        stop=tuple(message.stop),
        fit=not message.max_tokens,
    )


def messages_from_pb(messages: list[pb.ChatMessage]) -> list[ChatMessage]:
    return [ChatMessage(m.role, m.content) for m in messages]


def _choice_to_pb(choice: Classification | Generation) -> pb.Choice:
    if isinstance(choice, Classification):
        scores = [pb.LabelScore(label=k, score=v) for k, v in choice.scores.items()]
        return pb.Choice(text=choice.label, finish_reason="stop", label=choice.label, scores=scores)
    return pb.Choice(text=choice.text, finish_reason=choice.finish_reason)


def completion_to_pb(result: Completion) -> pb.CompleteResponse:
    return pb.CompleteResponse(
        model=result.model,
        learnware_id=result.learnware_id,
        kind=result.kind,
        choices=[_choice_to_pb(c) for c in result.choices],
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )


def completion_from_pb(message: pb.CompleteResponse) -> Completion:
    choices: list[Classification | Generation] = []
    for c in message.choices:
        if message.kind == "classification":
            choices.append(Classification(c.label, {s.label: s.score for s in c.scores}))
        else:
            # per-choice token counts are not on the wire; the totals are on the response
            choices.append(Generation(c.text, 0, 0, c.finish_reason))
    return Completion(
        model=message.model,
        learnware_id=message.learnware_id,
        kind=message.kind,
        choices=tuple(choices),
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
    )


def status_to_pb(status: DaemonStatus) -> pb.GetStatusResponse:
    return pb.GetStatusResponse(
        pid=status.pid,
        started_at=status.started_at,
        market=status.market,
        http_address=status.http_address,
        grpc_address=status.grpc_address,
        cache_dir=status.cache_dir,
        cache_bytes=status.cache_bytes,
        cache_max_bytes=status.cache_max_bytes,
        cached_learnwares=status.cached_learnwares,
        repairs=status.repairs,
        tasks=[task_to_pb(t) for t in status.tasks],
        loaded=[
            pb.LoadedBaseModel(
                base_model=b.base_model,
                kind=b.kind,
                device=b.device,
                dtype=b.dtype,
                learnware_ids=list(b.learnwares),
                batches_run=b.batches_run,
            )
            for b in status.loaded
        ],
    )


def status_from_pb(message: pb.GetStatusResponse) -> DaemonStatus:
    return DaemonStatus(
        pid=message.pid,
        started_at=message.started_at,
        market=message.market,
        http_address=message.http_address,
        grpc_address=message.grpc_address,
        cache_dir=message.cache_dir,
        cache_bytes=message.cache_bytes,
        cache_max_bytes=message.cache_max_bytes,
        cached_learnwares=message.cached_learnwares,
        repairs=message.repairs,
        tasks=tuple(task_from_pb(t) for t in message.tasks),
        loaded=tuple(
            LoadedBase(b.base_model, b.kind, b.device, b.dtype, tuple(b.learnware_ids), b.batches_run)
            for b in message.loaded
        ),
    )
