"""Domain records exchanged between market and client (decoupled from the proto classes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lmdock.common.card import Card
from lmdock.common.package import Manifest, TaskInfo
from lmdock.common.spec import Spec

__all__ = [
    "Caller",
    "LearnwareInfo",
    "Match",
    "MixtureComponent",
    "PackageHeader",
    "SearchResult",
    "SigningKeyInfo",
]


@dataclass(frozen=True)
class LearnwareInfo:
    """What the market tells anyone about a published learnware."""

    card: Card
    base_model: str
    task: TaskInfo
    spec: Spec
    package_sha256: str
    package_size: int
    created_at: str = ""
    eval_scores: Mapping[str, float] = field(default_factory=dict)
    dp_trained: bool = False
    dp_epsilon: float = 0.0
    signing_key_id: str = ""
    updated_at: str = ""
    #: The package's task vector as a spec under its task-vector profile (issue 22), when the
    #: market read it: the catalogue loads it for the search index, not for listings.
    task_vector: Spec | None = None

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        *,
        sha256: str,
        size: int,
        created_at: str,
        signing_key_id: str = "",
        task_vector: Spec | None = None,
    ) -> LearnwareInfo:
        dp_budget = manifest.dp_budget
        return cls(
            card=manifest.card,
            base_model=manifest.base_model,
            task=manifest.task,
            spec=manifest.spec,
            package_sha256=sha256,
            package_size=size,
            created_at=created_at,
            eval_scores=dict(manifest.eval_scores),
            dp_trained=manifest.dp_trained,
            dp_epsilon=dp_budget[0] if dp_budget else 0.0,
            signing_key_id=signing_key_id,
            updated_at=created_at,
            task_vector=task_vector,
        )


@dataclass(frozen=True)
class Match:
    learnware_id: str
    name: str
    domain: str
    distance: float  # debiased squared kernel-mean distance (MMD^2 estimate)
    score: float  # 0..1, higher is better
    distance_sd: float = 0.0  # its standard deviation under the noise of both specs
    rank_bound: float = 0.0  # what matches are sorted by (lmdock.common.ranking); 0 from older markets
    confidence: float = (
        0.0  # chance it is the nearest of the matches (ranking.confidences); 0 from older markets
    )


@dataclass(frozen=True)
class MixtureComponent:
    learnware_id: str
    weight: float


@dataclass(frozen=True)
class SearchResult:
    matches: tuple[Match, ...]
    mixture: tuple[MixtureComponent, ...] = ()
    mixture_residual: float = 0.0


@dataclass(frozen=True)
class PackageHeader:
    learnware_id: str
    sha256: str
    size: int


@dataclass(frozen=True)
class SigningKeyInfo:
    """A publisher's registered Ed25519 package-signing key; `revoked_at` is "" while valid."""

    key_id: str
    publisher: str
    public_key: str  # base64 of the raw 32-byte public key
    created_at: str
    revoked_at: str = ""

    @property
    def revoked(self) -> bool:
        return bool(self.revoked_at)


@dataclass(frozen=True)
class Caller:
    """Who a market says the caller is."""

    principal: str
    role: str  # "consumer", "publisher" or "admin"
    authenticated_by: str  # "api-key", "mtls" or "anonymous"
