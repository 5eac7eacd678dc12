from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerationParams(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_p", "stop")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Choice(_message.Message):
    __slots__ = ("text", "finish_reason", "label", "scores")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    text: str
    finish_reason: str
    label: str
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    def __init__(self, text: _Optional[str] = ..., finish_reason: _Optional[str] = ..., label: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("model", "prompts", "params")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompts: _containers.RepeatedScalarFieldContainer[str]
    params: GenerationParams
    def __init__(self, model: _Optional[str] = ..., prompts: _Optional[_Iterable[str]] = ..., params: _Optional[_Union[GenerationParams, _Mapping]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("model", "messages", "params")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    params: GenerationParams
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., params: _Optional[_Union[GenerationParams, _Mapping]] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("model", "learnware_id", "kind", "choices", "prompt_tokens", "completion_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    learnware_id: str
    kind: str
    choices: _containers.RepeatedCompositeFieldContainer[Choice]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, model: _Optional[str] = ..., learnware_id: _Optional[str] = ..., kind: _Optional[str] = ..., choices: _Optional[_Iterable[_Union[Choice, _Mapping]]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class TaskSource(_message.Message):
    __slots__ = ("name", "data", "format", "text_column", "label_column", "answer_column", "epsilon", "delta", "top_k", "learnware", "person_column")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    TEXT_COLUMN_FIELD_NUMBER: _ClassVar[int]
    LABEL_COLUMN_FIELD_NUMBER: _ClassVar[int]
    ANSWER_COLUMN_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    LEARNWARE_FIELD_NUMBER: _ClassVar[int]
    PERSON_COLUMN_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: str
    format: str
    text_column: str
    label_column: str
    answer_column: str
    epsilon: float
    delta: float
    top_k: int
    learnware: str
    person_column: str
    def __init__(self, name: _Optional[str] = ..., data: _Optional[str] = ..., format: _Optional[str] = ..., text_column: _Optional[str] = ..., label_column: _Optional[str] = ..., answer_column: _Optional[str] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., top_k: _Optional[int] = ..., learnware: _Optional[str] = ..., person_column: _Optional[str] = ...) -> None: ...

class TaskMatch(_message.Message):
    __slots__ = ("learnware_id", "score")
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    learnware_id: str
    score: float
    def __init__(self, learnware_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class LocalTask(_message.Message):
    __slots__ = ("source", "state", "stage", "learnware_id", "kind", "labels", "base_model", "publisher", "records", "matches", "epsilon_spent", "delta_spent", "error", "updated_at", "bytes_sent", "budget_spent", "budget_delta")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    DELTA_SPENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_SPENT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_DELTA_FIELD_NUMBER: _ClassVar[int]
    source: TaskSource
    state: str
    stage: str
    learnware_id: str
    kind: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    base_model: str
    publisher: str
    records: int
    matches: _containers.RepeatedCompositeFieldContainer[TaskMatch]
    epsilon_spent: float
    delta_spent: float
    error: str
    updated_at: float
    bytes_sent: int
    budget_spent: float
    budget_delta: float
    def __init__(self, source: _Optional[_Union[TaskSource, _Mapping]] = ..., state: _Optional[str] = ..., stage: _Optional[str] = ..., learnware_id: _Optional[str] = ..., kind: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., base_model: _Optional[str] = ..., publisher: _Optional[str] = ..., records: _Optional[int] = ..., matches: _Optional[_Iterable[_Union[TaskMatch, _Mapping]]] = ..., epsilon_spent: _Optional[float] = ..., delta_spent: _Optional[float] = ..., error: _Optional[str] = ..., updated_at: _Optional[float] = ..., bytes_sent: _Optional[int] = ..., budget_spent: _Optional[float] = ..., budget_delta: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[LocalTask]
    def __init__(self, models: _Optional[_Iterable[_Union[LocalTask, _Mapping]]] = ...) -> None: ...

class AddTaskRequest(_message.Message):
    __slots__ = ("task", "replace")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    task: TaskSource
    replace: bool
    def __init__(self, task: _Optional[_Union[TaskSource, _Mapping]] = ..., replace: _Optional[bool] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("stage", "done", "total", "task")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    task: LocalTask
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., task: _Optional[_Union[LocalTask, _Mapping]] = ...) -> None: ...

class RetryTaskRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveTaskRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: LocalTask
    def __init__(self, task: _Optional[_Union[LocalTask, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[LocalTask]
    def __init__(self, tasks: _Optional[_Iterable[_Union[LocalTask, _Mapping]]] = ...) -> None: ...

class LoadedBaseModel(_message.Message):
    __slots__ = ("base_model", "kind", "device", "dtype", "learnware_ids", "batches_run")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    LEARNWARE_IDS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_RUN_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    kind: str
    device: str
    dtype: str
    learnware_ids: _containers.RepeatedScalarFieldContainer[str]
    batches_run: int
    def __init__(self, base_model: _Optional[str] = ..., kind: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., learnware_ids: _Optional[_Iterable[str]] = ..., batches_run: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("pid", "started_at", "market", "http_address", "grpc_address", "cache_dir", "cache_bytes", "cache_max_bytes", "cached_learnwares", "repairs", "tasks", "loaded")
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    MARKET_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CACHE_DIR_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHED_LEARNWARES_FIELD_NUMBER: _ClassVar[int]
    REPAIRS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
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
    tasks: _containers.RepeatedCompositeFieldContainer[LocalTask]
    loaded: _containers.RepeatedCompositeFieldContainer[LoadedBaseModel]
    def __init__(self, pid: _Optional[int] = ..., started_at: _Optional[float] = ..., market: _Optional[str] = ..., http_address: _Optional[str] = ..., grpc_address: _Optional[str] = ..., cache_dir: _Optional[str] = ..., cache_bytes: _Optional[int] = ..., cache_max_bytes: _Optional[int] = ..., cached_learnwares: _Optional[int] = ..., repairs: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[LocalTask, _Mapping]]] = ..., loaded: _Optional[_Iterable[_Union[LoadedBaseModel, _Mapping]]] = ...) -> None: ...
