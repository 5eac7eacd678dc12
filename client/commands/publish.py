"""Publishing learnwares: build, package (with a spec), keys, sign, verify, publish."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lmdock.client.commands.common import add_device_options, add_json, add_market, market_client
from lmdock.client.commands.keys import add_key_option, load_signing_key
from lmdock.client.commands.ledger import add_ledger_options

__all__ = ["register"]


def _say(args: argparse.Namespace, text: str) -> None:
    """Human-readable notes go to stderr, so `--json` output stays one object on stdout."""
    print(text, file=sys.stderr if args.json else sys.stdout)


def _dp_summary(training: Any) -> dict[str, Any]:
    if training.get("dp"):
        return {"dp": True, "epsilon": training["epsilon"], "delta": training["delta"]}
    return {"dp": False}


def _build(args: argparse.Namespace) -> int:
    from lmdock.client.commands.ledger import debit_dict, spent_line
    from lmdock.client.commands.output import emit_json, progress_bar
    from lmdock.client.publish.build import build_learnware
    from lmdock.client.publish.model_card import describe_dp
    from lmdock.client.training.dp_sgd import DPConfig
    from lmdock.common.errors import InvalidArgument

    if (args.dp_epsilon is None) != (args.dp_delta is None):
        raise InvalidArgument("--dp-epsilon and --dp-delta go together")
    if args.dp_score_epsilon is not None and args.dp_epsilon is None:
        raise InvalidArgument("--dp-score-epsilon needs --dp-epsilon")
    dp = None
    if args.dp_epsilon is not None:
        dp = DPConfig(epsilon=args.dp_epsilon, delta=args.dp_delta, max_grad_norm=args.dp_max_grad_norm)
    given = {
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "rank": args.rank,
        "seed": args.seed,
        "target_modules": tuple(m for m in args.target_modules.split(",") if m) or None,
    }
    ledger = _declared_ledger(args, Path(args.data)) if dp is not None else None
    info, debit = build_learnware(
        base_model=args.base,
        data_path=Path(args.data),
        out=Path(args.out),
        task_kind=args.task,
        settings={k: v for k, v in given.items() if v is not None},
        dp=dp,
        eval_fraction=args.eval_fraction,
        labels=[label.strip() for label in args.labels.split(",")] if args.labels else None,
        score_epsilon=args.dp_score_epsilon,
        progress=progress_bar("training", enabled=not args.json),
        ledger=ledger,
        device=args.device,
        dtype=args.dtype,
    )
    spent = None if debit is None else debit_dict(debit)
    if args.json:
        emit_json(
            {
                "out": str(Path(args.out).resolve()),
                "base_model": info.base_model,
                "task": info.task.kind,
                "pooling": info.task.pooling,
                "labels": list(info.task.labels),
                "records": info.data,
                "eval_scores": info.eval_scores,
                "privacy": _dp_summary(info.training),
                "training": info.training,
                "ledger": None if ledger is None else {"path": str(ledger.path), "spent": spent},
            }
        )
        return 0
    print(f"built {info.task.kind} adapter on {info.base_model} -> {args.out}")
    noise = info.training.get("eval_scores", {}).get("sigma")
    how = "" if noise is None else f", DP: noised, sd {noise:.3f}"
    for name, value in sorted(info.eval_scores.items()):
        print(f"  {name}: {value:.4f} (held-out, {info.data['eval_records']} records{how})")
    print(f"  {describe_dp(info.training)}")
    if ledger is not None and spent is not None:
        print(f"  {spent_line(ledger, spent)}")
    return 0


def _declared_ledger(args: argparse.Namespace, data: Path) -> Any:
    """The home's ledger, told the data set `data` holds and its name (--dataset or the file's):
    the release booked by those records' content key further on is booked to it."""
    from lmdock.client.commands.ledger import dataset_name, ledger_from
    from lmdock.client.privacy_unit import DataSet
    from lmdock.client.task import read_task_file

    return ledger_from(args, declared=DataSet.of(read_task_file(data).texts, name=dataset_name(args, data)))


def _package(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json, progress_bar
    from lmdock.client.publish.package import load_build, load_card, package_build
    from lmdock.common.calibration import validate_privacy

    if args.spec_epsilon is not None:
        validate_privacy(epsilon=args.spec_epsilon, delta=args.spec_delta)
    build = load_build(Path(args.build_dir), base_model=args.base)  # a wrong build fails before the network
    card = load_card(
        Path(args.card) if args.card else None,
        {
            "id": args.id,
            "name": args.name,
            "domain": args.domain,
            "licence": args.licence,
            "publisher": args.publisher,
            "description": args.description,
            "tags": args.tag,
            "version": args.version,
        },
    )
    spec_source = Path(args.data) if args.data else Path(build.data["path"])
    vector_profile = _task_vector_profile_file(args.task_vector_profile) if args.task_vector_profile else None
    with market_client(args) as client:
        profile = client.profile()
        if args.task_vector and vector_profile is None:
            vector_profile = client.task_vector_profile()
    out = Path(args.out) if args.out else Path(f"{card.id}.tar")
    if args.spec_epsilon is None:
        _say(
            args,
            "note: the spec is the EXACT kernel mean of your training data: it discloses a summary of "
            "that data to the market and everyone who lists it. Use --spec-epsilon for a DP spec.",
        )
    manifest = package_build(
        Path(args.build_dir),
        out,
        profile=profile,
        card=card,
        spec_epsilon=args.spec_epsilon,
        spec_delta=args.spec_delta,
        data_path=Path(args.data) if args.data else None,
        base_model=args.base,
        progress=progress_bar("embedding", enabled=not args.json),
        ledger=None if args.spec_epsilon is None else _declared_ledger(args, spec_source),
        task_vector=vector_profile,
    )
    privacy = manifest.spec.privacy
    spec = (
        {"dp": True, "epsilon": privacy.epsilon, "delta": privacy.delta, "sigma": privacy.sigma}
        if privacy.epsilon
        else {"dp": False}
    )
    if args.json:
        emit_json(
            {
                "package": str(out.resolve()),
                "id": manifest.card.id,
                "signed": False,
                "spec": spec,
                "training": _dp_summary(manifest.training),
                "eval_scores": dict(manifest.eval_scores),
                "task_vector": None if manifest.task_vector is None else manifest.task_vector.to_dict(),
            }
        )
        return 0
    if manifest.task_vector is not None:
        carried = manifest.task_vector.profile
        print(
            f"the package carries the EXACT task vector of the same texts ({carried.dim} floats, "
            f"task-vector profile {carried.profile_id})"
        )
    print(f"wrote unsigned package {out} ({manifest.card.id}); sign it with `lmdock sign {out}`")
    return 0


def _task_vector_profile_file(path: str) -> Any:
    import json

    from lmdock.common.errors import InvalidArgument
    from lmdock.common.task_vector import TaskVectorProfile

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"cannot read the task-vector profile file {path}: {exc}") from None
    return TaskVectorProfile.from_dict(data)


def _sign(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json
    from lmdock.common.errors import InvalidArgument
    from lmdock.common.package_reader import sign_package

    package = Path(args.package)
    if not package.is_file():
        raise InvalidArgument(f"package {package} does not exist")
    manifest, signature, previous = sign_package(package, load_signing_key(args))
    if args.json:
        emit_json(
            {
                "package": args.package,
                "id": manifest.card.id,
                "key_id": signature.key_id,
                "replaced_key_id": previous or None,
            }
        )
    elif not previous:
        print(f"signed {args.package} ({manifest.card.id}) with key {signature.key_id}")
    else:
        again = "signed it again with the same key" if previous == signature.key_id else "replaced it"
        print(
            f"{args.package} ({manifest.card.id}) was already signed by key {previous}: {again} "
            f"(key {signature.key_id})"
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json
    from lmdock.client.publish.model_card import describe_dp
    from lmdock.client.publish.package import verify_package

    manifest, signature = verify_package(Path(args.package), trusted_key=args.trusted_key)
    privacy = manifest.spec.privacy
    spec = f"DP, epsilon={privacy.epsilon:g}, delta={privacy.delta:g}" if privacy.epsilon else "exact (no DP)"
    if args.json:
        emit_json(
            {
                "ok": True,
                "id": manifest.card.id,
                "publisher": manifest.card.publisher,
                "key_id": signature.key_id,
                "public_key": signature.public_key,
                "base_model": manifest.base_model,
                "task": manifest.task.kind,
                "training": _dp_summary(manifest.training),
                "spec_dp": bool(privacy.epsilon),
                "eval_scores": dict(manifest.eval_scores),
            }
        )
        return 0
    print(f"OK: {args.package} is intact and signed by key {signature.key_id} ({manifest.card.publisher})")
    print(f"  learnware   {manifest.card.id} v{manifest.card.version}: {manifest.card.name}")
    print(f"  base model  {manifest.base_model} ({manifest.task.kind})")
    print(f"  training    {describe_dp(dict(manifest.training))}")
    print(f"  spec        {spec}")
    noised = manifest.training.get("eval_scores", {}).get("sigma")
    how = " (exact: not DP)" if noised is None else f" (DP: noised, sd {noised:.3f})"
    for name, value in sorted(manifest.eval_scores.items()):
        print(f"  eval        {name}: {value:.4f}{how}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json, progress_bar
    from lmdock.client.connection import WireRecorder
    from lmdock.client.publish.package import publish_package

    package = Path(args.package)
    size = package.stat().st_size if package.is_file() else 0
    draw = progress_bar("uploading", enabled=not args.json)

    class UploadProgress(WireRecorder):
        def _record(self, request: Any) -> None:
            super()._record(request)
            draw(min(self.bytes_sent, size), size)

    with market_client(args, recorder=UploadProgress()) as client:
        info, uploaded = publish_package(client, package)
    if args.json:
        emit_json(
            {
                "id": info.card.id,
                "uploaded": uploaded,
                "package_sha256": info.package_sha256,
                "dp_trained": info.dp_trained,
                "dp_epsilon": info.dp_epsilon,
            }
        )
    else:
        verb = "published" if uploaded else "already published (same bytes)"
        print(f"{verb}: {info.card.id} on {args.market} (sha256 {info.package_sha256[:16]}...)")
    return 0


def _unpublish(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json

    with market_client(args) as client:
        removed = client.unpublish(args.learnware_id)
    if args.json:
        emit_json({"id": removed, "unpublished": True})
    else:
        print(f"unpublished {removed} from {args.market}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("build", help="fine-tune a LoRA adapter on your data (optionally with DP-SGD)")
    add_json(p)
    p.add_argument(
        "--base", required=True, help="base model: a packaged model id or a local checkpoint folder"
    )
    p.add_argument("--data", required=True, help="training data, JSONL with 'text' and 'label' or 'answer'")
    p.add_argument("--out", required=True, help="build folder to create")
    p.add_argument("--task", choices=("classification", "generation"), help="default: from the data")
    p.add_argument("--epochs", type=int, help="default 3 (LoRA), 10 (DP classification: linear probe)")
    p.add_argument("--learning-rate", type=float, help="default 1e-3 (LoRA, AdamW), 0.1 (probe, SGD)")
    p.add_argument(
        "--batch-size", type=int, help="default 16 (LoRA), 128 (probe); the expected batch size under DP"
    )
    p.add_argument("--max-tokens", type=int, default=64, help="tokens kept per text")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--target-modules", default="", help="comma-separated; default: attention query/value")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share for the model card")
    p.add_argument("--seed", type=int, default=0, help="split, shuffling and initialisation (not DP noise)")
    p.add_argument("--dp-epsilon", type=float, help="train with DP-SGD to this epsilon")
    p.add_argument("--dp-delta", type=float, help="delta of DP-SGD (at most min(1e-6, 1/(10 records)))")
    p.add_argument("--dp-max-grad-norm", type=float, default=1.0, help="per-record gradient clipping norm")
    p.add_argument(
        "--dp-score-epsilon",
        type=float,
        help="epsilon of the noised held-out scores of a DP build (default: min(0.5, --dp-epsilon))",
    )
    p.add_argument(
        "--labels",
        default="",
        help="the classifier's label set, comma-separated (published; a DP build needs it declared)",
    )
    add_device_options(p)
    add_ledger_options(p)
    p.set_defaults(func=_build)

    p = sub.add_parser("package", help="compute the learnware's spec and write an unsigned package")
    add_market(p)
    add_json(p)
    p.add_argument("build_dir", help="folder written by `lmdock build`")
    p.add_argument("--out", help="package file (default ID.tar)")
    p.add_argument("--card", help="JSON or TOML file with id, name, domain, licence, publisher, ...")
    for flag in ("id", "name", "domain", "licence", "publisher", "description", "version"):
        p.add_argument(f"--{flag}", default="")
    p.add_argument("--tag", action="append", default=[], help="repeat for several tags")
    p.add_argument("--spec-epsilon", type=float, help="release a DP spec (default: exact spec)")
    p.add_argument("--spec-delta", type=float, default=1e-6)
    p.add_argument("--data", help="texts the spec summarises (default: the build's training data)")
    p.add_argument("--base", help="refuse unless the build's base model is this one")
    p.add_argument(
        "--task-vector",
        action="store_true",
        help="also carry the exact task vector of the same texts, under the market's task-vector profile",
    )
    p.add_argument(
        "--task-vector-profile",
        metavar="FILE",
        help="the task-vector profile as a JSON file, instead of the market's (implies --task-vector)",
    )
    add_ledger_options(p)
    p.set_defaults(func=_package)

    p = sub.add_parser("sign", help="sign a package (its manifest lists every file's sha256)")
    add_json(p)
    p.add_argument("package")
    add_key_option(p)
    p.set_defaults(func=_sign)

    p = sub.add_parser("verify", help="check a package's hashes, signature and base model")
    add_json(p)
    p.add_argument("package")
    p.add_argument("--trusted-key", help="require this base64 public key")
    p.set_defaults(func=_verify)

    p = sub.add_parser("publish", help="upload a signed package to a market")
    add_market(p)
    add_json(p)
    p.add_argument("package")
    p.set_defaults(func=_publish)

    p = sub.add_parser("unpublish", help="remove your learnware from a market (admins: any)")
    add_market(p)
    add_json(p)
    p.add_argument("learnware_id")
    p.set_defaults(func=_unpublish)
