"""A site's part of `lmdock federate build`: DP-SGD rounds on its own data, booked before the first.

What the server proposes travels as `BuildSettings` in each train message's ConfigRecord; the
site plans the whole run from it (`plan_dp_sgd`: every round's local epochs, z fixed for all of
them) and books that plan in its own ledger when round 1 arrives, before it trains or sends
anything: over its data set's cap, BudgetExceeded, and the server gets an error reply and no
tensors. Each round then trains one equal part of the plan (`DPPlan.part`) with Opacus DP-SGD
(`lmdock.client.publish.training`, the same loop as `lmdock build`), starting from the global
adapter, and answers with the adapter's tensors and the record count only (public under
replace-one). Rounds come in order, once each: a replayed, skipped or extra round, or one
whose settings differ from the booked plan, is refused, so the site never trains more steps
than its ledger holds. No training loss leaves the site (it is not covered by DP).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from lmdock.client.publish.training import PROBE_TRAINING, TrainingConfig, train_adapter
from lmdock.client.task import TaskData
from lmdock.client.training.dp_sgd import DPConfig, DPPlan, plan_dp_sgd
from lmdock.common.errors import FailedPrecondition, InvalidArgument
from lmdock.common.package import TaskInfo
from lmdock.federated.site import Site
from safetensors.torch import load_file

__all__ = ["PROGRESS_KEY", "BuildSettings", "local_update", "round_reply", "train_round"]

#: Where the site's Context keeps how far it got in which federation.
PROGRESS_KEY = "lmdock.build"
#: A federation's rounds and local epochs are bounded: every one costs the sites privacy.
MAX_ROUNDS = 100


@dataclass(frozen=True)
class BuildSettings:
    """What the server proposes for a federated build (each site books it against its own cap)."""

    federation: str  # one random id per build: the ledger's destination
    base_model: str
    labels: tuple[str, ...]
    rounds: int
    local_epochs: int
    epsilon: float
    delta: float
    batch_size: int = PROBE_TRAINING.batch_size
    learning_rate: float = PROBE_TRAINING.learning_rate
    max_tokens: int = PROBE_TRAINING.max_tokens
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= MAX_ROUNDS or not 1 <= self.local_epochs <= MAX_ROUNDS:
            raise InvalidArgument(f"rounds and local epochs must be in [1, {MAX_ROUNDS}]")
        DPConfig(epsilon=self.epsilon, delta=self.delta)  # validates both
        self.task  # noqa: B018 (validates the label set)

    @property
    def task(self) -> TaskInfo:
        """A DP classifier: a linear head on mean-pooled states (`lmdock.client.publish.probe`)."""
        return TaskInfo(kind="classification", labels=tuple(sorted(self.labels)), pooling="mean")

    def training(self) -> TrainingConfig:
        """One round's local training."""
        return replace(
            PROBE_TRAINING,
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            max_tokens=self.max_tokens,
            seed=self.seed,
        )

    @functools.lru_cache(maxsize=16)  # noqa: B019 (frozen settings; the noise search takes seconds)
    def plan(self, records: int) -> DPPlan:
        """The site's whole run: rounds × local epochs of Poisson-sampled DP-SGD."""
        return plan_dp_sgd(
            DPConfig(epsilon=self.epsilon, delta=self.delta),
            records=records,
            batch_size=self.batch_size,
            epochs=self.rounds * self.local_epochs,
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "federation": self.federation,
            "base-model": self.base_model,
            "labels": list(self.labels),
            "rounds": self.rounds,
            "local-epochs": self.local_epochs,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "batch-size": self.batch_size,
            "learning-rate": self.learning_rate,
            "max-tokens": self.max_tokens,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BuildSettings:
        try:
            labels = config["labels"]
            if not isinstance(labels, list):
                raise TypeError("labels must be a list")
            return cls(
                federation=str(config["federation"]),
                base_model=str(config["base-model"]),
                labels=tuple(str(label) for label in labels),
                rounds=int(config["rounds"]),
                local_epochs=int(config["local-epochs"]),
                epsilon=float(config["epsilon"]),
                delta=float(config["delta"]),
                batch_size=int(config["batch-size"]),
                learning_rate=float(config["learning-rate"]),
                max_tokens=int(config["max-tokens"]),
                seed=int(config["seed"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"the build's settings are malformed: {exc}") from None


def destination(settings: BuildSettings, site: Site) -> str:
    return f"federated build {settings.federation} (site {site.name})"


def _admit(
    site: Site, data: TaskData, settings: BuildSettings, server_round: int, plan: DPPlan, context: Context
) -> None:
    """Book the whole run before round 1 (write-ahead); refuse a round out of order."""
    ledger, dataset = site.ledger(data)
    where = destination(settings, site)
    progress = context.state.get(PROGRESS_KEY)
    if server_round == 1:
        booked = any(e.data.get("destination") == where for e in ledger.state().releases)
        if booked or (isinstance(progress, ConfigRecord) and progress["federation"] == settings.federation):
            raise FailedPrecondition(
                f"site {site.name} already trained round 1 of federation {settings.federation}"
            )
        ledger.record(dataset, plan.release(), kind="training", destination=where)
    elif not (
        isinstance(progress, ConfigRecord)
        and progress["federation"] == settings.federation
        and progress["round"] == server_round - 1
        and progress["noise-multiplier"] == plan.noise_multiplier
        and server_round <= settings.rounds
    ):
        raise FailedPrecondition(
            f"site {site.name} refuses round {server_round} of federation {settings.federation}: "
            "rounds come once each, in order, with the settings its ledger booked"
        )
    context.state[PROGRESS_KEY] = ConfigRecord(
        {"federation": settings.federation, "round": server_round, "noise-multiplier": plan.noise_multiplier}
    )


def train_round(message: Message, context: Context) -> Message:
    """The ClientApp's train function of a federated build (module docstring)."""
    site = Site.from_node_config(context.node_config)
    config = message.content["config"]
    if not isinstance(config, ConfigRecord):
        raise InvalidArgument("a train message carries its settings as a ConfigRecord")
    settings = BuildSettings.from_config(config)
    data = site.read()
    if not data.has_labels:
        raise InvalidArgument(f"site {site.name}'s data has no labels to train on")
    outside = sorted({str(y) for y in data.labels} - set(settings.labels))
    if outside:
        raise InvalidArgument(
            f"site {site.name} has labels outside the federation's label set: {outside[:5]}"
        )
    plan = settings.plan(len(data.texts))
    _admit(site, data, settings, int(config["server-round"]), plan, context)  # type: ignore[arg-type]
    arrays = message.content["arrays"]
    if not isinstance(arrays, ArrayRecord):
        raise InvalidArgument("a train message carries the global adapter as an ArrayRecord")
    tensors = local_update(settings, data, arrays, dp=plan.part(settings.rounds))
    metrics = {
        "epsilon": plan.epsilon,
        "delta": plan.config.delta,
        "noise-multiplier": plan.noise_multiplier,
        "sample-rate": plan.sample_rate,
        "steps": plan.steps,
    }
    return round_reply(message, site, data, tensors, metrics)


def local_update(
    settings: BuildSettings, data: TaskData, start: ArrayRecord, *, dp: DPPlan | None
) -> dict[str, Any]:
    """One round's training of the site's records from the global adapter `start` (DP-SGD under
    `dp`; plain SGD without it, which only the lab's no-DP baseline asks for): the new tensors."""
    with tempfile.TemporaryDirectory() as tmp:
        train_adapter(
            base_model=settings.base_model,
            task=settings.task,
            texts=data.texts,
            targets=[str(y) for y in data.labels],
            out_dir=Path(tmp),
            config=settings.training(),
            dp=dp,
            start=start.to_torch_state_dict(),
        )
        return load_file(Path(tmp) / "adapter_model.safetensors")


def round_reply(
    message: Message, site: Site, data: TaskData, tensors: Mapping[str, Any], metrics: Mapping[str, float]
) -> Message:
    """The reply to a train message: the tensors, the record count with `metrics`, the site's name."""
    record = MetricRecord({"num-examples": len(data.texts), **metrics})
    site_record = ConfigRecord({"site": site.name})
    return Message(
        RecordDict({"arrays": ArrayRecord(dict(tensors)), "metrics": record, "site": site_record}),
        reply_to=message,
    )
