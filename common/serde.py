"""The one place that converts between proto messages (lmdock.v1) and domain records."""

from __future__ import annotations

import dataclasses

import numpy as np
from lmdock.common.card import Card
from lmdock.common.errors import InvalidArgument
from lmdock.common.market_types import (
    LearnwareInfo,
    Match,
    MixtureComponent,
    PackageHeader,
    SearchResult,
    SigningKeyInfo,
)
from lmdock.common.package import TaskInfo
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import Privacy, Spec
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.v1 import market_pb2 as pb

__all__ = [
    "header_from_pb",
    "header_to_pb",
    "learnware_from_pb",
    "learnware_to_pb",
    "profile_from_pb",
    "profile_to_pb",
    "search_result_from_pb",
    "search_result_to_pb",
    "signing_key_from_pb",
    "signing_key_to_pb",
    "spec_from_pb",
    "spec_to_pb",
    "supported_profiles",
    "supported_task_vector_profiles",
    "task_vector_profile_from_pb",
    "task_vector_profile_to_pb",
]


def profile_to_pb(p: SpecProfile) -> pb.SpecProfile:
    return pb.SpecProfile(
        profile_id=p.profile_id,
        version=p.version,
        kernel=p.kernel,
        embedder_id=p.embedder_id,
        embedder_sha256=p.embedder_sha256,
        pooling=p.pooling,
        max_tokens=p.max_tokens,
        dtype=p.dtype,
        embedding_dim=p.embedding_dim,
        feature_dim=p.feature_dim,
        bandwidth=p.bandwidth,
        seed=p.seed,
        feature_map_sha256=p.feature_map_sha256,
        clip_radius=p.clip_radius,
        centre=list(p.centre),
        max_sigma=p.max_sigma,
        projection=list(p.projection),
    )


def profile_from_pb(m: pb.SpecProfile) -> SpecProfile:
    """Decode and check that the profile's id matches its contents."""
    return SpecProfile.from_dict(
        {
            "profile_id": m.profile_id,
            "version": m.version,
            "kernel": m.kernel,
            "embedder_id": m.embedder_id,
            "embedder_sha256": m.embedder_sha256,
            "pooling": m.pooling,
            "max_tokens": m.max_tokens,
            "dtype": m.dtype,
            "embedding_dim": m.embedding_dim,
            "feature_dim": m.feature_dim,
            "bandwidth": m.bandwidth,
            "seed": m.seed,
            "feature_map_sha256": m.feature_map_sha256,
            "clip_radius": m.clip_radius,
            "centre": list(m.centre),
            "projection": list(m.projection),
            "max_sigma": m.max_sigma,  # 0 from a market that predates it: the profile's default
        }
    )


def supported_profiles(response: pb.GetSpecProfileResponse) -> list[SpecProfile]:
    """The profiles a market serves (newest first) that this lmdock can compute specs under: one
    of a kind or version it does not know is skipped; a market before the list sends its one."""
    out = []
    for message in response.profiles or [response.profile]:
        try:
            out.append(profile_from_pb(message))
        except InvalidArgument:
            continue
    return out


def task_vector_profile_to_pb(p: TaskVectorProfile) -> pb.TaskVectorProfile:
    return pb.TaskVectorProfile(profile_id=p.profile_id, **p.to_dict())


def task_vector_profile_from_pb(m: pb.TaskVectorProfile) -> TaskVectorProfile:
    """Decode and check that the profile's id matches its contents."""
    return TaskVectorProfile.from_dict(
        {
            "profile_id": m.profile_id,
            "kind": m.kind,
            "version": m.version,
            "base_model": m.base_model,
            "base_sha256": m.base_sha256,
            "dim": m.dim,
            "layers": m.layers,
            "rank": m.rank,
            "targets": list(m.targets),
            "max_tokens": m.max_tokens,
            "steps": m.steps,
            "learning_rate": m.learning_rate,
            "clip_norm": m.clip_norm,
            "seed": m.seed,
        }
    )


def supported_task_vector_profiles(response: pb.GetSpecProfileResponse) -> list[TaskVectorProfile]:
    """The task-vector profiles a market serves (newest first) that this lmdock knows; none from
    a market before them."""
    out = []
    for message in response.task_vector_profiles:
        try:
            out.append(task_vector_profile_from_pb(message))
        except InvalidArgument:
            continue
    return out


def _privacy_to_pb(p: Privacy) -> pb.Privacy:
    return pb.Privacy(
        epsilon=p.epsilon or 0.0,
        delta=p.delta,
        sigma=p.sigma,
        size_bucket=p.size_bucket,
        neighbouring=p.neighbouring,
        unit=p.unit,
    )


def spec_to_pb(s: Spec) -> pb.Spec:
    return pb.Spec(
        version=s.version,
        profile_id=s.profile_id,
        values=s.values.tolist(),
        privacy=_privacy_to_pb(s.privacy),
    )


def spec_from_pb(m: pb.Spec) -> Spec:
    """Decode a spec; structural checks only (the market checks it against its profile)."""
    if not m.HasField("privacy"):
        raise InvalidArgument("spec.privacy is required")
    p = m.privacy
    privacy = Privacy.from_dict(
        {
            "epsilon": p.epsilon if p.sigma > 0 else None,
            "delta": p.delta,
            "sigma": p.sigma,
            "size_bucket": p.size_bucket,
            "neighbouring": p.neighbouring or "replace-one",
            "unit": p.unit or "record",
        }
    )
    return Spec(
        profile_id=m.profile_id,
        values=np.fromiter(m.values, np.float32, len(m.values)),  # a third quicker than asarray
        privacy=privacy,
        version=m.version,
    )


def learnware_to_pb(lw: LearnwareInfo) -> pb.Learnware:
    return pb.Learnware(
        **lw.card.to_dict(),  # the card's fields are the message's, by the same names
        base_model=lw.base_model,
        task=pb.TaskInfo(kind=lw.task.kind, labels=list(lw.task.labels)),
        spec=spec_to_pb(lw.spec),
        package_sha256=lw.package_sha256,
        package_size=lw.package_size,
        created_at=lw.created_at,
        eval_scores=dict(lw.eval_scores),
        dp_trained=lw.dp_trained,
        dp_epsilon=lw.dp_epsilon,
        signing_key_id=lw.signing_key_id,
        updated_at=lw.updated_at,
    )


def learnware_from_pb(m: pb.Learnware) -> LearnwareInfo:
    return LearnwareInfo(
        card=Card.from_dict({f.name: getattr(m, f.name) for f in dataclasses.fields(Card)}),
        base_model=m.base_model,
        task=TaskInfo(kind=m.task.kind, labels=tuple(m.task.labels)),
        spec=spec_from_pb(m.spec),
        package_sha256=m.package_sha256,
        package_size=m.package_size,
        created_at=m.created_at,
        eval_scores=dict(m.eval_scores),
        dp_trained=m.dp_trained,
        dp_epsilon=m.dp_epsilon,
        signing_key_id=m.signing_key_id,
        updated_at=m.updated_at,
    )


def search_result_to_pb(r: SearchResult) -> pb.SearchResponse:
    return pb.SearchResponse(
        matches=[
            pb.Match(
                learnware_id=m.learnware_id,
                name=m.name,
                domain=m.domain,
                distance=m.distance,
                score=m.score,
                distance_sd=m.distance_sd,
                rank_bound=m.rank_bound,
                confidence=m.confidence,
            )
            for m in r.matches
        ],
        mixture=[pb.MixtureComponent(learnware_id=c.learnware_id, weight=c.weight) for c in r.mixture],
        mixture_residual=r.mixture_residual,
    )


def search_result_from_pb(m: pb.SearchResponse) -> SearchResult:
    return SearchResult(
        matches=tuple(
            Match(
                learnware_id=x.learnware_id,
                name=x.name,
                domain=x.domain,
                distance=x.distance,
                score=x.score,
                distance_sd=x.distance_sd,
                rank_bound=x.rank_bound,
                confidence=x.confidence,
            )
            for x in m.matches
        ),
        mixture=tuple(MixtureComponent(learnware_id=c.learnware_id, weight=c.weight) for c in m.mixture),
        mixture_residual=m.mixture_residual,
    )


def header_to_pb(h: PackageHeader) -> pb.PackageHeader:
    return pb.PackageHeader(learnware_id=h.learnware_id, sha256=h.sha256, size=h.size)


def header_from_pb(m: pb.PackageHeader) -> PackageHeader:
    return PackageHeader(learnware_id=m.learnware_id, sha256=m.sha256, size=m.size)


def signing_key_to_pb(k: SigningKeyInfo) -> pb.SigningKey:
    return pb.SigningKey(
        key_id=k.key_id,
        publisher=k.publisher,
        public_key=k.public_key,
        created_at=k.created_at,
        revoked_at=k.revoked_at,
    )


def signing_key_from_pb(m: pb.SigningKey) -> SigningKeyInfo:
    return SigningKeyInfo(
        key_id=m.key_id,
        publisher=m.publisher,
        public_key=m.public_key,
        created_at=m.created_at,
        revoked_at=m.revoked_at,
    )
