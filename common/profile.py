"""The spec profile: everything client and market must share to compute comparable specs.

A profile names the embedder (id and weight hash), how texts become vectors (pooling, token
limit, dtype), and the explicit feature map applied to the unit embeddings (kernel,
dimension, bandwidth, public seed, public centre, clip radius, and for the projected kind its
public projection) together with a hash of that map's parameters. The client rebuilds the
feature map from the profile and refuses the profile unless both the embedder's weight hash and
the feature-map hash match (see `features`).

One field is the market's policy rather than part of how a spec is computed: `max_sigma`, the
largest noise a spec may carry (uploads and searches). It stays out of the profile id, so
declaring it (or a profile file written before it existed, which gets the default) leaves every
published spec, package and client comparable; docs/search.md derives the default.

The profile id is the hash of the RFC 8785 (JCS) encoding of the other fields (v2, what another
language can reproduce: docs/verify-any-language.md). Specs and packages made before it carry
the v1 id (`legacy_profile_id`, the same fields in the first canonical JSON); both ids name the
same profile (`ids`), so everything published under the v1 id stays comparable and searchable.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lmdock.common.canonical import canonical_json, jcs, sha256_hex
from lmdock.common.errors import InvalidArgument

__all__ = [
    "DIRECTIONAL",
    "KERNELS",
    "MAX_SIGMA",
    "POLICY_FIELDS",
    "SPEC_VERSION",
    "SpecProfile",
    "default_max_sigma",
]

#: Version of the spec format: the feature maps below and a release on a grid finer than the noise.
SPEC_VERSION = 1
#: "cosine" is the linear kernel's spec (the mean of the unit embeddings) compared by direction:
#: the normalised mean-map kernel <mu_P, mu_Q> / (||mu_P|| ||mu_Q||) (see `ranking.comparable`).
#: "projected" is a public linear projection of the embeddings, clipped about a public centre and
#: compared by direction once the centre is added back (`features`, `ranking.comparable`).
KERNELS = ("linear", "rbf", "cosine", "projected")
#: Kernels whose specs the market compares by direction (scaled to unit debiased norm).
DIRECTIONAL = ("cosine", "projected")
MAX_FEATURE_DIM = 16384

#: The hard ceiling on any profile's max_sigma: far past the point where a spec says anything,
#: and it keeps sigma^2 * D from overflowing a float.
MAX_SIGMA = 1000.0

#: Profile fields that are the market's acceptance policy: outside the profile id.
POLICY_FIELDS = ("max_sigma",)
#: Fields left out of the profile id while empty, so the ids of profiles from before them stand.
OMITTED_WHEN_EMPTY = ("projection",)


def default_max_sigma(feature_dim: int, clip_radius: float) -> float:
    """2 * 2R / (2D)^(1/4): twice the sigma at which a spec's own noise moves its distance
    (sd sqrt(2D) sigma^2) by as much as the whole range of distances, (2R)^2."""
    return 2.0 * 2.0 * clip_radius / math.sqrt(math.sqrt(2.0 * feature_dim))


def _check_float32(name: str, values: tuple[float, ...]) -> None:
    """The wire carries these as float32 and the feature-map hash reads them so: a value that is
    not one would give clients another profile id than the market's, and they would skip it."""
    if values and not np.array_equal(np.asarray(values, dtype=np.float32), np.asarray(values)):
        raise InvalidArgument(f"{name} values must be float32 numbers (as make_profile writes them)")


@dataclass(frozen=True)
class SpecProfile:
    embedder_id: str
    embedder_sha256: str
    embedding_dim: int
    feature_dim: int
    feature_map_sha256: str
    kernel: str = "linear"
    bandwidth: float = 0.0
    seed: int = 0
    clip_radius: float = 1.0
    centre: tuple[float, ...] = field(default=(), repr=False)
    #: "projected" only: the feature_dim x embedding_dim matrix A, row-major (see `features`)
    projection: tuple[float, ...] = field(default=(), repr=False)
    pooling: str = "mean"
    max_tokens: int = 256
    dtype: str = "float32"
    version: int = SPEC_VERSION
    max_sigma: float = 0.0  # 0: default_max_sigma(feature_dim, clip_radius), set on construction

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise InvalidArgument(f"unknown kernel {self.kernel!r}; expected one of {KERNELS}")
        if self.version != SPEC_VERSION:
            raise InvalidArgument(f"spec version {self.version} is not supported (need {SPEC_VERSION})")
        if not 0 < self.embedding_dim <= MAX_FEATURE_DIM:
            raise InvalidArgument(f"embedding_dim {self.embedding_dim} out of range")
        if not 0 < self.feature_dim <= MAX_FEATURE_DIM:
            raise InvalidArgument(f"feature_dim {self.feature_dim} out of range (1..{MAX_FEATURE_DIM})")
        if self.kernel in ("linear", "cosine") and self.feature_dim != self.embedding_dim:
            raise InvalidArgument(f"a {self.kernel}-kernel profile has feature_dim == embedding_dim")
        self._check_projection()
        if self.kernel == "rbf" and (self.feature_dim % 2 or self.bandwidth <= 0):
            raise InvalidArgument("an rbf profile needs an even feature_dim and a positive bandwidth")
        if not 0 < self.clip_radius <= 2:
            raise InvalidArgument(f"clip_radius must be in (0, 2], got {self.clip_radius}")
        if self.centre and len(self.centre) != self.feature_dim:
            raise InvalidArgument(
                f"centre has {len(self.centre)} values, the feature dimension is {self.feature_dim}"
            )
        if not all(math.isfinite(x) and abs(x) <= 2 for x in self.centre):
            raise InvalidArgument("centre values must be finite and within [-2, 2]")
        _check_float32("centre", self.centre)
        if self.pooling != "mean" or self.dtype != "float32":
            raise InvalidArgument("only mean pooling in float32 is supported")
        if not 0 < self.max_tokens <= 8192:
            raise InvalidArgument(f"max_tokens {self.max_tokens} out of range")
        if not 0 <= self.seed < 2**53:  # an integer JSON holds exactly in every language
            raise InvalidArgument("seed must be in [0, 2^53)")
        if self.max_sigma == 0:
            object.__setattr__(self, "max_sigma", default_max_sigma(self.feature_dim, self.clip_radius))
        if not (math.isfinite(self.max_sigma) and 0 < self.max_sigma <= MAX_SIGMA):
            raise InvalidArgument(f"max_sigma must be in (0, {MAX_SIGMA:g}], got {self.max_sigma!r}")

    def _check_projection(self) -> None:
        if self.kernel != "projected":
            if self.projection:
                raise InvalidArgument(f"only a projected profile carries a projection, not {self.kernel!r}")
            return
        if self.feature_dim > self.embedding_dim:
            raise InvalidArgument("a projected profile has feature_dim <= embedding_dim")
        if len(self.projection) != self.feature_dim * self.embedding_dim:
            raise InvalidArgument(
                f"projection has {len(self.projection)} values, feature_dim x embedding_dim is "
                f"{self.feature_dim * self.embedding_dim}"
            )
        # |a| <= 1 holds for orthonormal rows and keeps A e finite for any unit e; the clip
        # bounds the sensitivity whatever A is (`features`)
        if not all(math.isfinite(x) and abs(x) <= 1 for x in self.projection):
            raise InvalidArgument("projection values must be finite and within [-1, 1]")
        _check_float32("projection", self.projection)

    @property
    def offset(self) -> tuple[float, ...]:
        """The public vector the market adds to every spec before comparing (`ranking`): a
        projected profile's centre, which its feature map subtracts; none for other kinds."""
        return self.centre if self.kernel == "projected" else ()

    @functools.cached_property  # the profile is frozen; every Search compares against its id
    def profile_id(self) -> str:
        """First 16 hex digits of the sha256 of the JCS encoding of every field that shapes a
        spec (all but `POLICY_FIELDS`, so profiles from before them keep their id)."""
        return sha256_hex(jcs(self._shaping()))[:16]

    @functools.cached_property
    def legacy_profile_id(self) -> str:
        """The v1 id: the same fields in the first canonical JSON (specs made before v2 carry it)."""
        return sha256_hex(canonical_json(self._shaping()))[:16]

    @property
    def ids(self) -> tuple[str, str]:
        """Every id naming this profile, the current one first: a spec, package or profile file
        under either is under this profile."""
        return self.profile_id, self.legacy_profile_id

    def _shaping(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in POLICY_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["centre"] = list(self.centre)
        data["projection"] = list(self.projection)
        for name in OMITTED_WHEN_EMPTY:
            if not data[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpecProfile:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known - {"profile_id"}
        if unknown:
            raise InvalidArgument(f"unknown spec profile fields: {sorted(unknown)}")
        values = {k: v for k, v in data.items() if k in known}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(values))
        if missing:
            raise InvalidArgument(f"spec profile lacks {', '.join(missing)}")
        try:
            for name in ("centre", "projection"):
                values[name] = tuple(float(x) for x in values.get(name, ()))
            profile = cls(**values)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise InvalidArgument(f"malformed spec profile: {exc}") from None
        if "profile_id" in data and data["profile_id"] not in profile.ids:
            raise InvalidArgument("profile_id does not match the profile's contents")
        return profile

    def to_json(self) -> str:
        return json.dumps({**self.to_dict(), "profile_id": self.profile_id}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SpecProfile:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"spec profile is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidArgument("spec profile must be a JSON object")
        return cls.from_dict(data)
