"""Packaging a trained adapter as a learnware, with its own kernel-mean spec; checking and publishing it.

The spec summarises the learnware's training data under the market's profile: exact by default
(it then discloses the mean feature vector of the training data: a summary, not the records),
or (ε, δ)-DP with `spec_epsilon`. Packages are written unsigned unless a key is given; `lmdock
sign` adds the signature (`common.package_reader.sign_package`).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.client.connection import MarketClient
from lmdock.client.embedder import Embedder
from lmdock.client.ledger import Ledger
from lmdock.client.progress import Progress
from lmdock.client.publish.build import BuildInfo
from lmdock.client.publish.model_card import render_model_card
from lmdock.client.spec_release import SpecBooking, private_spec, public_spec
from lmdock.client.task import read_task_file
from lmdock.common.card import Card
from lmdock.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from lmdock.common.hashing import sha256_file
from lmdock.common.market_types import LearnwareInfo
from lmdock.common.package import REQUIRED_FILES, Manifest, TaskInfo, write_package
from lmdock.common.package_reader import unpack_package
from lmdock.common.profile import SpecProfile
from lmdock.common.signing import Signature
from lmdock.common.spec import EXACT
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.common.task_vector_member import TASK_VECTOR_FILE, TaskVectorInfo, write_task_vector

__all__ = [
    "adapter_base_model",
    "check_publisher",
    "load_build",
    "load_card",
    "package_build",
    "package_learnware",
    "publish_package",
    "verify_package",
]

MAX_CARD_BYTES = 64 * 1024


def load_card(path: Path | None, overrides: Mapping[str, Any]) -> Card:
    """The card from a JSON or TOML card file, each non-empty flag in `overrides` taking precedence;
    the name defaults to the id."""
    values: dict[str, Any] = {}
    if path is not None:
        if not path.is_file() or path.stat().st_size > MAX_CARD_BYTES:
            raise InvalidArgument(f"card file {path} does not exist or is larger than {MAX_CARD_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
        try:
            values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise InvalidArgument(f"card file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
        if not isinstance(values, dict):
            raise InvalidArgument(f"card file {path} must hold an object")
    values.update({k: v for k, v in overrides.items() if v})
    known = {f.name for f in fields(Card)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidArgument(f"unknown card fields {unknown}; known: {sorted(known)}")
    missing = [name for name in ("id", "domain", "licence", "publisher") if not values.get(name)]
    if missing:
        raise InvalidArgument(
            f"the learnware needs {', '.join(missing)}: pass --{missing[0]} or a --card file"
        )
    return Card.from_dict({**values, "name": values.get("name") or values["id"]})


def adapter_base_model(adapter_dir: Path) -> str:
    """The base model the PEFT adapter in `adapter_dir` was built for (its adapter_config.json)."""
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        return str(config["base_model_name_or_path"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            f"{adapter_dir}/adapter_config.json is not a PEFT adapter config: {exc}"
        ) from None


def _check_base(adapter_dir: Path, base_model: str) -> None:
    built_for = adapter_base_model(adapter_dir)
    if built_for != base_model:
        raise InvalidArgument(
            f"the adapter was built for base model {built_for!r}, not {base_model!r}: "
            "an adapter only works on the base model it was trained on"
        )


def package_learnware(
    adapter_dir: Path,
    out: Path,
    *,
    card: Card,
    profile: SpecProfile,
    spec_texts: Sequence[str],
    key: Ed25519PrivateKey | None,
    base_model: str,
    task: TaskInfo,
    spec_epsilon: float | None = None,
    spec_delta: float = 1e-6,
    eval_scores: Mapping[str, float] | None = None,
    training: Mapping[str, Any] | None = None,
    model_card: str | None = None,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    ledger: Ledger | None = None,
    task_vector: TaskVectorProfile | None = None,
) -> Manifest:
    """Write a v1 package for the adapter in `adapter_dir` to `out` (signed when `key` is given).

    The spec is the kernel mean of `spec_texts` (the training data) under the market's
    `profile`: exact when `spec_epsilon` is None, else (spec_epsilon, spec_delta)-DP, and then
    debited from `ledger` before the package is written (a spec released before for the same
    texts, parameters and profile is reused at no cost). With a `task_vector` profile the package
    also carries the exact task vector of the same texts (`task_vector.safetensors`).
    """
    missing = [f for f in REQUIRED_FILES if not (adapter_dir / f).is_file()]
    if missing:
        raise InvalidArgument(f"{adapter_dir} lacks {', '.join(missing)}: is it a PEFT adapter folder?")
    _check_base(adapter_dir, base_model)
    if spec_epsilon is None:
        spec = public_spec(spec_texts, profile, embedder=embedder)
    elif ledger is None:
        spec = private_spec(
            spec_texts, profile, epsilon=spec_epsilon, delta=spec_delta, embedder=embedder, progress=progress
        ).spec
    else:
        booking = SpecBooking.open(ledger, spec_texts, epsilon=spec_epsilon, delta=spec_delta)
        spec, _debit = booking.spec(
            profile, destination=f"package {out.resolve()}", embedder=embedder, progress=progress
        )
    files = {f: adapter_dir / f for f in REQUIRED_FILES}
    with tempfile.TemporaryDirectory() as tmp:
        if model_card is not None:
            files["README.md"] = Path(tmp) / "README.md"
            files["README.md"].write_text(model_card, encoding="utf-8")
        member = None
        if task_vector is not None:
            files[TASK_VECTOR_FILE] = Path(tmp) / TASK_VECTOR_FILE
            member = exact_task_vector(spec_texts, task_vector, files[TASK_VECTOR_FILE])
        return write_package(
            out,
            files=files,
            key=key,
            card=card,
            base_model=base_model,
            task=task,
            spec=spec,
            eval_scores=eval_scores,
            training={"dp": False, **dict(training or {})},
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            task_vector=member,
        )


def exact_task_vector(texts: Sequence[str], profile: TaskVectorProfile, out: Path) -> TaskVectorInfo:
    """Write the publisher's exact task vector of `texts` to `out`; returns what the manifest says of it."""
    from lmdock.client.training.task_vector import compute_task_vector  # torch: only when asked for

    vector = compute_task_vector(texts, profile)
    write_task_vector(out, vector.values)
    return TaskVectorInfo(profile, EXACT)  # as an exact kernel-mean spec: no noise, no size stated


def load_build(build_dir: Path, *, base_model: str | None = None) -> BuildInfo:
    """The build in `build_dir`; with `base_model`, refuse one built on another base."""
    build = BuildInfo.load(build_dir)
    if base_model is not None and base_model != build.base_model:
        raise InvalidArgument(
            f"{build_dir} was built on base model {build.base_model!r}, not {base_model!r}: "
            "an adapter only works on the base model it was trained on"
        )
    return build


def package_build(
    build_dir: Path,
    out: Path,
    *,
    profile: SpecProfile,
    card: Card,
    spec_epsilon: float | None = None,
    spec_delta: float = 1e-6,
    data_path: Path | None = None,
    base_model: str | None = None,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    ledger: Ledger | None = None,
    task_vector: TaskVectorProfile | None = None,
) -> Manifest:
    """An unsigned package of the build in `build_dir`, its spec computed from the training data
    (a DP spec is debited from `ledger`, refused over the budget before anything is embedded:
    the same data set as a DP build of the same file)."""
    build = load_build(build_dir, base_model=base_model)
    source = data_path or Path(build.data["path"])
    if data_path is None and (not source.is_file() or sha256_file(source) != build.data["sha256"]):
        raise InvalidArgument(
            f"the training data {source} is missing or changed since the build; pass --data with the file "
            "the spec should summarise"
        )
    texts = read_task_file(source).texts
    if spec_epsilon is None:
        spec_line = f"exact kernel mean of {len(texts)} training texts (discloses a summary of them)"
    else:
        spec_line = f"DP kernel mean of {len(texts)} texts, epsilon={spec_epsilon:g}, delta={spec_delta:g}"
    return package_learnware(
        build_dir,
        out,
        profile=profile,
        spec_texts=texts,
        key=None,
        card=card,
        base_model=build.base_model,
        task=build.task,
        spec_epsilon=spec_epsilon,
        spec_delta=spec_delta,
        eval_scores=build.eval_scores,
        training=build.training,
        model_card=render_model_card(build, card, spec_line=spec_line),
        embedder=embedder,
        progress=progress,
        ledger=ledger,
        task_vector=task_vector,
    )


def verify_package(package: Path, *, trusted_key: str | None = None) -> tuple[Manifest, Signature]:
    """Check a package as the market will: every sha256, the signature, the adapter's base model."""
    if not package.is_file():
        raise InvalidArgument(f"package {package} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        manifest, signature = unpack_package(package, Path(tmp) / "pkg", trusted_key=trusted_key)
        _check_base(Path(tmp) / "pkg", manifest.base_model)
    return manifest, signature


def check_publisher(client: MarketClient, manifest: Manifest, signature: Signature) -> None:
    """Refuse, before a byte is uploaded, what the market would refuse for who is publishing:
    no credentials on a market that needs them, a consumer key, a manifest naming another
    publisher than the caller, a signing key that is revoked or not registered for it."""
    market, publisher = client.address, manifest.card.publisher
    try:
        caller = client.whoami()
    except Unauthenticated:
        raise Unauthenticated(
            f"{market} requires credentials: publishing needs a publisher API key from its operator "
            f"(`lmdock-market keys create --principal {publisher} --role publisher`), "
            "passed in $LMDOCK_API_KEY or with --api-key"
        ) from None
    anonymous = caller.authenticated_by == "anonymous"
    if not anonymous and caller.role == "consumer":
        raise PermissionDenied(
            f"{market} knows you as consumer {caller.principal!r}: publishing needs a publisher API key"
        )
    if not anonymous and caller.role == "publisher" and caller.principal != publisher:
        raise PermissionDenied(
            f"the package's manifest names publisher {publisher!r}, but {market} knows you as "
            f'{caller.principal!r}: set publisher = "{caller.principal}" in the card, then package '
            "and sign again"
        )
    keys = {k.key_id: k for k in client.signing_keys(publisher)}
    key = keys.get(signature.key_id)
    if key is not None and key.revoked:
        raise PermissionDenied(
            f"the package is signed by key {key.key_id}, revoked on {market} at {key.revoked_at}: "
            "sign it with a registered key (`lmdock sign --key ...`)"
        )
    if key is None and (keys or not anonymous):  # an open market accepts a publisher's first key
        admin = f" --publisher {publisher}" if caller.role == "admin" else ""
        raise FailedPrecondition(
            f"the package is signed by key {signature.key_id}, which is not registered with {market} "
            f"for publisher {publisher!r}, so the market would refuse it: register it first with "
            f"`lmdock keys register --market {market}{admin}` (as {publisher}, with its publisher API key)"
        )


def publish_package(client: MarketClient, package: Path) -> tuple[LearnwareInfo, bool]:
    """Upload a verified package; (info, False) when it is already published with the same bytes.

    The package is checked locally (`verify_package`) and against the market (`check_publisher`)
    first. A failed upload leaves nothing on the market, so running this again is always safe.
    """
    manifest, signature = verify_package(package)
    check_publisher(client, manifest, signature)
    digest = sha256_file(package)
    try:
        existing = client.get(manifest.card.id)
        if existing.package_sha256 == digest:
            return existing, False
    except NotFound:
        pass
    return client.upload(package), True
