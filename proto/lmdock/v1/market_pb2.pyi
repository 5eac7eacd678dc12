from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SpecProfile(_message.Message):
    __slots__ = ("profile_id", "version", "kernel", "embedder_id", "embedder_sha256", "pooling", "max_tokens", "dtype", "embedding_dim", "feature_dim", "bandwidth", "seed", "feature_map_sha256", "clip_radius", "centre_sha256", "centre", "max_sigma", "projection")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_SHA256_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FEATURE_MAP_SHA256_FIELD_NUMBER: _ClassVar[int]
    CLIP_RADIUS_FIELD_NUMBER: _ClassVar[int]
    CENTRE_SHA256_FIELD_NUMBER: _ClassVar[int]
    CENTRE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIGMA_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    version: int
    kernel: str
    embedder_id: str
    embedder_sha256: str
    pooling: str
    max_tokens: int
    dtype: str
    embedding_dim: int
    feature_dim: int
    bandwidth: float
    seed: int
    feature_map_sha256: str
    clip_radius: float
    centre_sha256: str
    centre: _containers.RepeatedScalarFieldContainer[float]
    max_sigma: float
    projection: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, profile_id: _Optional[str] = ..., version: _Optional[int] = ..., kernel: _Optional[str] = ..., embedder_id: _Optional[str] = ..., embedder_sha256: _Optional[str] = ..., pooling: _Optional[str] = ..., max_tokens: _Optional[int] = ..., dtype: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., feature_dim: _Optional[int] = ..., bandwidth: _Optional[float] = ..., seed: _Optional[int] = ..., feature_map_sha256: _Optional[str] = ..., clip_radius: _Optional[float] = ..., centre_sha256: _Optional[str] = ..., centre: _Optional[_Iterable[float]] = ..., max_sigma: _Optional[float] = ..., projection: _Optional[_Iterable[float]] = ...) -> None: ...

class TaskVectorProfile(_message.Message):
    __slots__ = ("profile_id", "kind", "version", "base_model", "base_sha256", "dim", "layers", "rank", "targets", "max_tokens", "steps", "learning_rate", "clip_norm", "seed")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    BASE_SHA256_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    kind: str
    version: int
    base_model: str
    base_sha256: str
    dim: int
    layers: int
    rank: int
    targets: _containers.RepeatedScalarFieldContainer[str]
    max_tokens: int
    steps: int
    learning_rate: float
    clip_norm: float
    seed: int
    def __init__(self, profile_id: _Optional[str] = ..., kind: _Optional[str] = ..., version: _Optional[int] = ..., base_model: _Optional[str] = ..., base_sha256: _Optional[str] = ..., dim: _Optional[int] = ..., layers: _Optional[int] = ..., rank: _Optional[int] = ..., targets: _Optional[_Iterable[str]] = ..., max_tokens: _Optional[int] = ..., steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., clip_norm: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class Privacy(_message.Message):
    __slots__ = ("epsilon", "delta", "sigma", "size_bucket", "neighbouring", "unit")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    SIZE_BUCKET_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURING_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    delta: float
    sigma: float
    size_bucket: int
    neighbouring: str
    unit: str
    def __init__(self, epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., sigma: _Optional[float] = ..., size_bucket: _Optional[int] = ..., neighbouring: _Optional[str] = ..., unit: _Optional[str] = ...) -> None: ...

class Spec(_message.Message):
    __slots__ = ("version", "profile_id", "values", "privacy")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    version: int
    profile_id: str
    values: _containers.RepeatedScalarFieldContainer[float]
    privacy: Privacy
    def __init__(self, version: _Optional[int] = ..., profile_id: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ..., privacy: _Optional[_Union[Privacy, _Mapping]] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("kind", "labels")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class Learnware(_message.Message):
    __slots__ = ("id", "name", "domain", "tags", "base_model", "licence", "description", "publisher", "version", "task", "spec", "package_sha256", "package_size", "created_at", "eval_scores", "dp_trained", "dp_epsilon", "signing_key_id", "updated_at")
    class EvalScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LICENCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EVAL_SCORES_FIELD_NUMBER: _ClassVar[int]
    DP_TRAINED_FIELD_NUMBER: _ClassVar[int]
    DP_EPSILON_FIELD_NUMBER: _ClassVar[int]
    SIGNING_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    domain: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    base_model: str
    licence: str
    description: str
    publisher: str
    version: str
    task: TaskInfo
    spec: Spec
    package_sha256: str
    package_size: int
    created_at: str
    eval_scores: _containers.ScalarMap[str, float]
    dp_trained: bool
    dp_epsilon: float
    signing_key_id: str
    updated_at: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., domain: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., base_model: _Optional[str] = ..., licence: _Optional[str] = ..., description: _Optional[str] = ..., publisher: _Optional[str] = ..., version: _Optional[str] = ..., task: _Optional[_Union[TaskInfo, _Mapping]] = ..., spec: _Optional[_Union[Spec, _Mapping]] = ..., package_sha256: _Optional[str] = ..., package_size: _Optional[int] = ..., created_at: _Optional[str] = ..., eval_scores: _Optional[_Mapping[str, float]] = ..., dp_trained: _Optional[bool] = ..., dp_epsilon: _Optional[float] = ..., signing_key_id: _Optional[str] = ..., updated_at: _Optional[str] = ...) -> None: ...

class GetSpecProfileRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSpecProfileResponse(_message.Message):
    __slots__ = ("profile", "profiles", "task_vector_profiles")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    TASK_VECTOR_PROFILES_FIELD_NUMBER: _ClassVar[int]
    profile: SpecProfile
    profiles: _containers.RepeatedCompositeFieldContainer[SpecProfile]
    task_vector_profiles: _containers.RepeatedCompositeFieldContainer[TaskVectorProfile]
    def __init__(self, profile: _Optional[_Union[SpecProfile, _Mapping]] = ..., profiles: _Optional[_Iterable[_Union[SpecProfile, _Mapping]]] = ..., task_vector_profiles: _Optional[_Iterable[_Union[TaskVectorProfile, _Mapping]]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("spec", "top_k", "mixture")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIXTURE_FIELD_NUMBER: _ClassVar[int]
    spec: Spec
    top_k: int
    mixture: bool
    def __init__(self, spec: _Optional[_Union[Spec, _Mapping]] = ..., top_k: _Optional[int] = ..., mixture: _Optional[bool] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("learnware_id", "name", "domain", "distance", "score", "distance_sd", "rank_bound", "confidence")
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_SD_FIELD_NUMBER: _ClassVar[int]
    RANK_BOUND_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    learnware_id: str
    name: str
    domain: str
    distance: float
    score: float
    distance_sd: float
    rank_bound: float
    confidence: float
    def __init__(self, learnware_id: _Optional[str] = ..., name: _Optional[str] = ..., domain: _Optional[str] = ..., distance: _Optional[float] = ..., score: _Optional[float] = ..., distance_sd: _Optional[float] = ..., rank_bound: _Optional[float] = ..., confidence: _Optional[float] = ...) -> None: ...

class MixtureComponent(_message.Message):
    __slots__ = ("learnware_id", "weight")
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    learnware_id: str
    weight: float
    def __init__(self, learnware_id: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("matches", "mixture", "mixture_residual")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    MIXTURE_FIELD_NUMBER: _ClassVar[int]
    MIXTURE_RESIDUAL_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    mixture: _containers.RepeatedCompositeFieldContainer[MixtureComponent]
    mixture_residual: float
    def __init__(self, matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., mixture: _Optional[_Iterable[_Union[MixtureComponent, _Mapping]]] = ..., mixture_residual: _Optional[float] = ...) -> None: ...

class GetLearnwareRequest(_message.Message):
    __slots__ = ("learnware_id",)
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    learnware_id: str
    def __init__(self, learnware_id: _Optional[str] = ...) -> None: ...

class GetLearnwareResponse(_message.Message):
    __slots__ = ("learnware",)
    LEARNWARE_FIELD_NUMBER: _ClassVar[int]
    learnware: Learnware
    def __init__(self, learnware: _Optional[_Union[Learnware, _Mapping]] = ...) -> None: ...

class ListLearnwaresRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "domain", "tag", "publisher", "base_model", "task_kind")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_KIND_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    domain: str
    tag: str
    publisher: str
    base_model: str
    task_kind: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., domain: _Optional[str] = ..., tag: _Optional[str] = ..., publisher: _Optional[str] = ..., base_model: _Optional[str] = ..., task_kind: _Optional[str] = ...) -> None: ...

class ListLearnwaresResponse(_message.Message):
    __slots__ = ("learnwares", "next_page_token")
    LEARNWARES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    learnwares: _containers.RepeatedCompositeFieldContainer[Learnware]
    next_page_token: str
    def __init__(self, learnwares: _Optional[_Iterable[_Union[Learnware, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("learnware_id", "offset")
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    learnware_id: str
    offset: int
    def __init__(self, learnware_id: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class PackageHeader(_message.Message):
    __slots__ = ("learnware_id", "sha256", "size")
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    learnware_id: str
    sha256: str
    size: int
    def __init__(self, learnware_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PackageHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[PackageHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("sha256", "size")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("learnware",)
    LEARNWARE_FIELD_NUMBER: _ClassVar[int]
    learnware: Learnware
    def __init__(self, learnware: _Optional[_Union[Learnware, _Mapping]] = ...) -> None: ...

class UnpublishRequest(_message.Message):
    __slots__ = ("learnware_id",)
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    learnware_id: str
    def __init__(self, learnware_id: _Optional[str] = ...) -> None: ...

class UnpublishResponse(_message.Message):
    __slots__ = ("learnware_id",)
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    learnware_id: str
    def __init__(self, learnware_id: _Optional[str] = ...) -> None: ...

class SigningKey(_message.Message):
    __slots__ = ("key_id", "publisher", "public_key", "created_at", "revoked_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    publisher: str
    public_key: str
    created_at: str
    revoked_at: str
    def __init__(self, key_id: _Optional[str] = ..., publisher: _Optional[str] = ..., public_key: _Optional[str] = ..., created_at: _Optional[str] = ..., revoked_at: _Optional[str] = ...) -> None: ...

class RegisterSigningKeyRequest(_message.Message):
    __slots__ = ("public_key", "publisher", "proof")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    public_key: str
    publisher: str
    proof: bytes
    def __init__(self, public_key: _Optional[str] = ..., publisher: _Optional[str] = ..., proof: _Optional[bytes] = ...) -> None: ...

class RegisterSigningKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: SigningKey
    def __init__(self, key: _Optional[_Union[SigningKey, _Mapping]] = ...) -> None: ...

class ListSigningKeysRequest(_message.Message):
    __slots__ = ("publisher",)
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    publisher: str
    def __init__(self, publisher: _Optional[str] = ...) -> None: ...

class ListSigningKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[SigningKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[SigningKey, _Mapping]]] = ...) -> None: ...

class RevokeSigningKeyRequest(_message.Message):
    __slots__ = ("key_id", "publisher")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    publisher: str
    def __init__(self, key_id: _Optional[str] = ..., publisher: _Optional[str] = ...) -> None: ...

class RevokeSigningKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: SigningKey
    def __init__(self, key: _Optional[_Union[SigningKey, _Mapping]] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("principal", "role", "authenticated_by")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATED_BY_FIELD_NUMBER: _ClassVar[int]
    principal: str
    role: str
    authenticated_by: str
    def __init__(self, principal: _Optional[str] = ..., role: _Optional[str] = ..., authenticated_by: _Optional[str] = ...) -> None: ...
