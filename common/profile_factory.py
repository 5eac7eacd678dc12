"""Construction of spec profiles (the market builds one at init; tests and the lab too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from lmdock.common.embedder_files import DEFAULT_EMBEDDER, embedder_sha256
from lmdock.common.errors import InvalidArgument
from lmdock.common.features import feature_map_sha256
from lmdock.common.profile import SpecProfile

__all__ = ["PROFILE_KINDS", "make_profile", "profile_of_kind"]

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
    max_tokens: int = 256,
    max_sigma: float = 0.0,
) -> SpecProfile:
    """A complete profile, with the feature-map hash computed from its parameters.

    The linear kernel is the default: measured identification accuracy under DP is best with
    it (docs/privacy.md). `centre` values are rounded to float32 so the profile is exact on
    the wire. `max_sigma` 0 takes the profile's default (`default_max_sigma`).
    """
    dim = feature_dim if feature_dim is not None else embedding_dim
    centre32 = tuple(float(x) for x in np.asarray(centre, dtype=np.float32))
    digest = feature_map_sha256(
        kernel=kernel,
        embedding_dim=embedding_dim,
        feature_dim=dim,
        bandwidth=bandwidth,
        seed=seed,
        clip_radius=clip_radius,
        centre=centre32,
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
