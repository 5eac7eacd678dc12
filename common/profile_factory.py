"""Construction of spec profiles (the market builds one at init; tests and the lab too)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from lmdock.common.embedder_files import DEFAULT_EMBEDDER, embedder_sha256
from lmdock.common.errors import InvalidArgument
from lmdock.common.features import feature_map_sha256
from lmdock.common.profile import SpecProfile

__all__ = [
    "PROFILE_KINDS",
    "PROJECTED_CLIP_RADIUS",
    "PROJECTED_KIND",
    "PROJECTED_VARIANCE",
    "fit_projected_profile",
    "make_profile",
    "profile_of_kind",
]

MINILM_DIM = 384


def make_profile(
    *,
    embedder_id: str = DEFAULT_EMBEDDER,
    embedder_hash: str | None = None,
    embedding_dim: int = MINILM_DIM,
    kernel: str = "linear",
    feature_dim: int | None = None,
    bandwidth: float = 0.0,
    seed: int = 0,
    clip_radius: float = 1.0,
    centre: Sequence[float] = (),
    projection: Sequence[float] = (),
    max_tokens: int = 256,
    max_sigma: float = 0.0,
) -> SpecProfile:
    """A complete profile, with the feature-map hash computed from its parameters.

    The linear kernel is the default: measured identification accuracy under DP is best with
    it (docs/privacy.md). `centre` values are rounded to float32 so the profile is exact on
    the wire, and so are `projection`'s. `max_sigma` 0 takes the profile's default
    (`default_max_sigma`).
    """
    dim = feature_dim if feature_dim is not None else embedding_dim
    centre32 = tuple(float(x) for x in np.asarray(centre, dtype=np.float32))
    projection32 = tuple(float(x) for x in np.asarray(projection, dtype=np.float32))
    digest = feature_map_sha256(
        kernel=kernel,
        embedding_dim=embedding_dim,
        feature_dim=dim,
        bandwidth=bandwidth,
        seed=seed,
        clip_radius=clip_radius,
        centre=centre32,
        projection=projection32,
    )
    return SpecProfile(
        embedder_id=embedder_id,
        embedder_sha256=embedder_hash if embedder_hash is not None else embedder_sha256(embedder_id),
        embedding_dim=embedding_dim,
        feature_dim=dim,
        feature_map_sha256=digest,
        kernel=kernel,
        bandwidth=bandwidth,
        seed=seed,
        clip_radius=clip_radius,
        centre=centre32,
        projection=projection32,
        max_tokens=max_tokens,
        max_sigma=max_sigma,
    )


#: The built-in spec kinds a market can serve (`lmdock-market add-profile --kind NAME`), oldest
#: first: each name builds its profile from public parameters only. A new kind of spec is one
#: entry here (with its feature map in `features`); docs/search.md, *Profiles side by side*.
PROFILE_KINDS: dict[str, Callable[[], SpecProfile]] = {
    "linear": make_profile,
    "cosine": lambda: make_profile(kernel="cosine"),
}


def profile_of_kind(kind: str) -> SpecProfile:
    """The built-in profile named `kind` (see `PROFILE_KINDS`)."""
    try:
        return PROFILE_KINDS[kind]()
    except KeyError:
        raise InvalidArgument(
            f"unknown spec kind {kind!r} (choose from {', '.join(PROFILE_KINDS)})"
        ) from None


#: The fitted kind (`lmdock-market add-profile --kind projected`): its profile is fitted on the
#: market's published specs, not built from public constants alone as `PROFILE_KINDS` are.
PROJECTED_KIND = "projected"
#: Its defaults, chosen on the leave-one-data-set-out protocol (docs/search.md, *The projected kind*).
PROJECTED_VARIANCE = 0.9
PROJECTED_CLIP_RADIUS = 0.3


def fit_projected_profile(
    specs: npt.ArrayLike,
    sigmas: npt.ArrayLike,
    *,
    base: SpecProfile,
    variance: float = PROJECTED_VARIANCE,
    clip_radius: float = PROJECTED_CLIP_RADIUS,
) -> SpecProfile:
    """A "projected" profile fitted on published kernel-mean specs (rows; `base` is their
    linear or cosine profile, `sigmas` their noise).

    c is the specs' mean and A's rows the specs' first k principal directions about c, k the
    fewest that hold `variance` of their spread once the noise is taken out: the scatter of L
    specs in D dimensions carrying noise of mean variance s^2 has its noise directions' squared
    singular values up to s^2 (sqrt(D) + sqrt(L - 1))^2 (the Marchenko-Pastur edge), so that
    much is taken from each direction. The profile's centre is A c, so phi(e) = clip_R(A (e - c)).
    Only published specs go in: the fit is post-processing of their releases, costs no privacy,
    and is fixed before any user's data.
    """
    if base.kernel not in ("linear", "cosine") or base.centre or base.clip_radius != 1.0:
        raise InvalidArgument(
            "a projection is fitted on means of unit embeddings: specs of an uncentred linear or "
            f"cosine profile with clip radius 1, not of this {base.kernel!r} one"
        )
    if not 0 < variance <= 1:
        raise InvalidArgument(f"variance must be in (0, 1], got {variance!r}")
    m = np.asarray(specs, dtype=np.float64)
    noise = np.asarray(sigmas, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != base.embedding_dim or noise.shape != (len(m),):
        raise InvalidArgument(f"expected one sigma per spec and specs of {base.embedding_dim} values")
    if len(m) < 3:
        raise InvalidArgument(f"fitting a projection needs the specs of at least 3 learnwares, got {len(m)}")
    c = m.mean(axis=0)
    _, singular, vt = np.linalg.svd(m - c, full_matrices=False)
    edge = float(np.mean(noise**2)) * (math.sqrt(m.shape[1]) + math.sqrt(len(m) - 1)) ** 2
    spread = np.maximum(singular**2 - edge, 0.0)
    if not spread.sum() > 0:
        raise InvalidArgument("the specs differ by no more than their noise: there is nothing to fit")
    k = min(int(np.searchsorted(np.cumsum(spread) / spread.sum(), variance * (1 - 1e-12)) + 1), len(spread))
    rows = vt[:k]
    # each row's sign fixed (its largest entry positive): an SVD may return either
    rows = rows * np.sign(rows[np.arange(k), np.argmax(np.abs(rows), axis=1)])[:, None]
    a = rows.astype(np.float32)
    return make_profile(
        embedder_id=base.embedder_id,
        embedder_hash=base.embedder_sha256,
        embedding_dim=base.embedding_dim,
        kernel=PROJECTED_KIND,
        feature_dim=k,
        clip_radius=clip_radius,
        centre=a.astype(np.float64) @ c,
        projection=a.ravel(),
        max_tokens=base.max_tokens,
    )
