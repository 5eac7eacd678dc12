"""The model card (README.md) of a learnware: what it does, how it scored, what its training disclosed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmdock.client.publish.build import BuildInfo
    from lmdock.common.card import Card

__all__ = ["describe_dp", "render_model_card"]


def describe_dp(training: dict[str, Any]) -> str:
    """One line on how the adapter was trained, privacy-wise."""
    if training.get("dp"):
        covered = (
            "per record of the data file, replace-one: the adapter and its held-out scores"
            if training.get("eval_scores")
            else "per training record, replace-one"
        )
        return (
            f"trained with DP-SGD: epsilon={float(training['epsilon']):.3g}, "
            f"delta={float(training['delta']):.3g} ({covered})"
        )
    return "trained WITHOUT differential privacy: the adapter may reveal records it was trained on"


def render_model_card(build: BuildInfo, card: Card | None = None, *, spec_line: str = "") -> str:
    """Markdown card: metadata (once packaged), base model, task, held-out scores, privacy."""
    title = card.name if card else "Learnware build"
    lines = [f"# {title}", ""]
    if card and card.description:
        lines += [card.description, ""]
    if card:
        lines += [
            f"- id: {card.id} (version {card.version})",
            f"- domain: {card.domain}",
            f"- licence: {card.licence}",
            f"- publisher: {card.publisher}",
        ]
    labels = f" ({', '.join(build.task.labels)})" if build.task.labels else ""
    adapter = (
        "a linear head on its mean-pooled states (base model frozen)"
        if build.task.pooling == "mean"
        else f"LoRA (r={build.training.get('rank')})"
    )
    lines += [
        f"- base model: {build.base_model} + {adapter}",
        f"- task: {build.task.kind}{labels}",
        f"- training data: {build.data['train_records']} records; "
        f"held out for evaluation: {build.data['eval_records']}",
        f"- privacy: {describe_dp(build.training)}",
    ]
    if spec_line:
        lines.append(f"- specification: {spec_line}")
    lines += ["", "## Held-out evaluation", ""]
    released = build.training.get("eval_scores")
    if build.eval_scores and released:
        lines += [
            f"Differentially private (epsilon={float(released['epsilon']):.3g}): counts over the "
            f"{released['held_out_records']} held-out records with Gaussian noise, standard deviation "
            f"{float(released['sigma']):.3f} per score (unbiased, may fall outside [0, 1]).",
            "",
        ]
    if build.eval_scores:
        lines += [f"- {name}: {value:.4f}" for name, value in sorted(build.eval_scores.items())]
    else:
        lines.append("- none (built with --eval-fraction 0)")
    return "\n".join(lines) + "\n"
