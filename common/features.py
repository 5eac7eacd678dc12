"""Explicit feature maps whose inner products define the spec's kernel.

Given unit embeddings e (||e|| = 1) the map is phi(e) = clip_R(psi(e) - c), where

* linear kernel:  psi(e) = e                                     (k(x, y) = <x, y>)
* cosine kernel:  psi(e) = e, as linear; the market compares the means' directions
                  (`lmdock.common.ranking.comparable`)
* rbf kernel:     psi(e) = sqrt(2 / D) [cos(W e), sin(W e)],  W ~ N(0, 2 gamma I)^(D/2 x d)
                  so <psi(x), psi(y)> ≈ exp(-gamma ||x - y||^2) and ||psi(e)|| = 1 exactly,
* projected:      psi(e) = A e, A the profile's public D x d projection (orthonormal rows when
                  fitted: `profile_factory.fit_projected_profile`); the market adds c back before
                  comparing directions (`lmdock.common.ranking.comparable`),
* c is the profile's public centre (0 when absent) and clip_R scales a vector down to L2
  norm R when it is longer (identity otherwise).

Hence ||phi(e)|| <= R for every input, whatever A, W or c, which bounds the sensitivity of the
kernel mean (see `spec`). Centring does not change distances between means; it lets a smaller R keep
most records unclipped, and R sets the noise.

W is drawn from numpy's PCG64 stream seeded by the public profile seed. numpy does not
promise that stream across versions, so the profile carries `feature_map_sha256`, a hash of
the map's parameters, and `build_feature_map` refuses a map it cannot reproduce.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from lmdock.common.errors import ProfileMismatch
from lmdock.common.profile import SpecProfile

__all__ = ["FeatureMap", "build_feature_map", "feature_map_sha256"]

FloatArray = npt.NDArray[np.float64]


def _rff_weights(*, seed: int, bandwidth: float, feature_dim: int, embedding_dim: int) -> FloatArray:
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.standard_normal((feature_dim // 2, embedding_dim)) * math.sqrt(2.0 * bandwidth)


def feature_map_sha256(
    *,
    kernel: str,
    embedding_dim: int,
    feature_dim: int,
    bandwidth: float,
    seed: int,
    clip_radius: float,
    centre: tuple[float, ...],
    projection: tuple[float, ...] = (),
) -> str:
    """Hash of everything the map depends on, including the drawn RFF weights themselves (and a
    projection, when there is one: the hashes of maps without one are as before it)."""
    h = hashlib.sha256()
    h.update(f"{kernel}|{embedding_dim}|{feature_dim}|{bandwidth!r}|{seed}|{clip_radius!r}|".encode())
    if kernel == "rbf":
        weights = _rff_weights(
            seed=seed, bandwidth=bandwidth, feature_dim=feature_dim, embedding_dim=embedding_dim
        )
        h.update(weights.astype("<f8").tobytes())
    h.update(np.asarray(centre, dtype="<f4").tobytes())
    if projection:
        h.update(b"|projection|" + np.asarray(projection, dtype="<f4").tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class FeatureMap:
    """phi(e) = clip_R(psi(e) - c); see the module docstring."""

    kernel: str
    clip_radius: float
    centre: FloatArray
    weights: FloatArray | None  # (D/2, d) for rbf
    projection: FloatArray | None = None  # (D, d) for projected

    @property
    def dim(self) -> int:
        return int(self.centre.shape[0])

    def __call__(self, embeddings: npt.ArrayLike) -> FloatArray:
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2:
            raise ValueError("embeddings must be a 2-D array (records x dims)")
        if self.projection is not None:
            psi = e @ self.projection.T
        elif self.weights is None:
            psi = e
        else:
            proj = e @ self.weights.T
            psi = np.concatenate([np.cos(proj), np.sin(proj)], axis=1) / math.sqrt(proj.shape[1])
        phi = psi - self.centre
        norms = np.linalg.norm(phi, axis=1, keepdims=True)
        scale = np.minimum(1.0, self.clip_radius / np.maximum(norms, 1e-300))
        out: FloatArray = phi * scale
        return out


def build_feature_map(profile: SpecProfile) -> FeatureMap:
    """The profile's feature map; raises ProfileMismatch if its hash cannot be reproduced."""
    digest = feature_map_sha256(
        kernel=profile.kernel,
        embedding_dim=profile.embedding_dim,
        feature_dim=profile.feature_dim,
        bandwidth=profile.bandwidth,
        seed=profile.seed,
        clip_radius=profile.clip_radius,
        centre=profile.centre,
        projection=profile.projection,
    )
    if digest != profile.feature_map_sha256:
        raise ProfileMismatch(
            "the market's feature map cannot be reproduced here (hash mismatch); "
            "upgrade lmdock or ask the market operator which version built this profile"
        )
    weights = (
        _rff_weights(
            seed=profile.seed,
            bandwidth=profile.bandwidth,
            feature_dim=profile.feature_dim,
            embedding_dim=profile.embedding_dim,
        )
        if profile.kernel == "rbf"
        else None
    )
    centre = (
        np.asarray(profile.centre, dtype=np.float64)
        if profile.centre
        else np.zeros(profile.feature_dim, dtype=np.float64)
    )
    projection = (
        np.asarray(profile.projection, dtype=np.float64).reshape(profile.feature_dim, profile.embedding_dim)
        if profile.projection
        else None
    )
    return FeatureMap(
        kernel=profile.kernel,
        clip_radius=profile.clip_radius,
        centre=centre,
        weights=weights,
        projection=projection,
    )
