"""Packaging a trained adapter as a signed learnware, with its own kernel-mean spec."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.client.embedder import Embedder
from lmdock.client.specs import features_of
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import REQUIRED_FILES, Manifest, TaskInfo, write_package
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import exact_spec, release

__all__ = ["package_learnware"]


def package_learnware(
    adapter_dir: Path,
    out: Path,
    *,
    profile: SpecProfile,
    spec_texts: Sequence[str],
    key: Ed25519PrivateKey,
    learnware_id: str,
    name: str,
    domain: str,
    base_model: str,
    licence: str,
    publisher: str,
    task: TaskInfo,
    spec_epsilon: float | None = None,
    spec_delta: float = 1e-6,
    description: str = "",
    tags: Sequence[str] = (),
    eval_scores: Mapping[str, float] | None = None,
    training: Mapping[str, Any] | None = None,
    model_card: str | None = None,
    embedder: Embedder | None = None,
) -> Manifest:
    """Write a signed v1 package for the adapter in `adapter_dir` to `out`.

    The spec is the kernel mean of `spec_texts` (the training data) under the market's
    `profile`: exact when `spec_epsilon` is None (public data), else (epsilon, delta)-DP.
    """
    missing = [f for f in REQUIRED_FILES if not (adapter_dir / f).is_file()]
    if missing:
        raise InvalidArgument(f"{adapter_dir} lacks {', '.join(missing)}: is it a PEFT adapter folder?")
    features = features_of(spec_texts, profile, embedder=embedder)
    spec = (
        exact_spec(features, profile)
        if spec_epsilon is None
        else release(features, profile, epsilon=spec_epsilon, delta=spec_delta)
    )
    files = {f: adapter_dir / f for f in REQUIRED_FILES}
    if model_card is not None:
        card = adapter_dir.parent / f".{learnware_id}.README.md"
        card.write_text(model_card, encoding="utf-8")
        files["README.md"] = card
    try:
        return write_package(
            out,
            files=files,
            key=key,
            id=learnware_id,
            name=name,
            domain=domain,
            base_model=base_model,
            licence=licence,
            publisher=publisher,
            task=task,
            spec=spec,
            description=description,
            tags=tuple(tags),
            eval_scores=dict(eval_scores or {}),
            training=dict(training or {}),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
    finally:
        if "README.md" in files:
            files["README.md"].unlink(missing_ok=True)
