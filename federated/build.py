"""`lmdock federate build`, the server's side: FedAvg of one adapter's tensors over the sites.

The ServerApp makes the fresh adapter every site starts from (a DP classifier: LoRA at its
identity initialisation and a zero head on mean-pooled states, as `lmdock build --dp-epsilon`
makes it), runs Flower's FedAvg (`flwr.serverapp.strategy.FedAvg`, weighted by each site's
record count) for the proposed rounds, and, given a market profile, asks every site that took
part for its DP spec (`spec_site`) to make the joint spec (`joint_spec`). It writes the result
as an adapter folder: `adapter_config.json` + `adapter_model.safetensors` (package format v1)
and `federation.json` (who took part, what each site's ledger booked, who refused and why).

`AdapterFedAvg` aggregates only replies that are exactly the adapter's tensors (same names and
shapes, finite) with a plausible record count; a site that refused (over its budget, a round
out of order) or answered otherwise takes no further part.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from lmdock.client.models import resolve_base_model
from lmdock.client.publish.training import tidy_adapter_folder
from lmdock.client.training.objectives import load_task_model
from lmdock.common.errors import FailedPrecondition
from lmdock.common.profile import SpecProfile
from lmdock.common.spec import Spec
from lmdock.federated.build_site import BuildSettings
from lmdock.federated.joint_spec import weighted_mean
from lmdock.federated.spec_site import spec_request
from safetensors.torch import load_file, save_file

__all__ = ["FEDERATION_FILE", "AdapterFedAvg", "SiteRun", "run_build"]

FEDERATION_FILE = "federation.json"
ADAPTER_FILE = "adapter_model.safetensors"
#: A site claiming more records than this is refused (the weight of its update is its count).
MAX_RECORDS = 10_000_000


@dataclass(frozen=True)
class SiteRun:
    """What one site's ledger booked for the build (public parameters only)."""

    site: str
    records: int
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int


def initial_adapter(settings: BuildSettings, folder: Path) -> dict[str, torch.Tensor]:
    """Write the fresh adapter's config to `folder` and return its tensors (zero head)."""
    config = settings.training()
    torch.manual_seed(config.seed)
    tm = load_task_model(
        resolve_base_model(settings.base_model),
        settings.task,
        base_model=settings.base_model,
        max_tokens=config.max_tokens,
        rank=config.rank,
        alpha=config.alpha,
        dropout=config.dropout,
    )
    tm.model.save_pretrained(str(folder), safe_serialization=True)
    tidy_adapter_folder(folder)
    tensors = load_file(folder / ADAPTER_FILE)
    return {k: torch.zeros_like(v) if ".classifier." in k else v for k, v in tensors.items()}


class AdapterFedAvg(FedAvg):
    """FedAvg over the sites that take part, of replies that are exactly the adapter's tensors."""

    def __init__(self, template: Mapping[str, torch.Tensor], *, nodes: int) -> None:
        super().__init__(fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes)
        self.template = dict(template)
        self.sites: dict[int, SiteRun] = {}  # by node id
        self.refused: dict[int, str] = {}  # node id -> why

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_train(server_round, arrays, config, grid)
        return [m for m in messages if m.metadata.dst_node_id not in self.refused]

    def _check(self, message: Message) -> SiteRun:
        content = message.content
        arrays, metrics, site = content.get("arrays"), content.get("metrics"), content.get("site")
        if not (isinstance(arrays, ArrayRecord) and isinstance(metrics, MetricRecord)):
            raise ValueError("the reply lacks the adapter's tensors or its metrics")
        tensors = arrays.to_torch_state_dict()
        if set(tensors) != set(self.template) or any(
            tensors[k].shape != v.shape or not bool(torch.isfinite(tensors[k]).all())
            for k, v in self.template.items()
        ):
            raise ValueError("the reply's tensors are not the adapter's (names, shapes, finite values)")
        records = metrics.get("num-examples")
        if not isinstance(records, int) or not 1 <= records <= MAX_RECORDS:
            raise ValueError(f"the reply's record count {records!r} is not in [1, {MAX_RECORDS}]")
        name = site.get("site") if isinstance(site, ConfigRecord) else None
        return SiteRun(
            site=str(name),
            records=records,
            epsilon=float(metrics["epsilon"]),  # type: ignore[arg-type]
            delta=float(metrics["delta"]),  # type: ignore[arg-type]
            noise_multiplier=float(metrics["noise-multiplier"]),  # type: ignore[arg-type]
            sample_rate=float(metrics["sample-rate"]),  # type: ignore[arg-type]
            steps=int(metrics["steps"]),  # type: ignore[arg-type]
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted = []
        for message in replies:
            node = message.metadata.src_node_id
            if message.has_error():
                self.refused[node] = str(message.error.reason)
                continue
            try:
                run = self._check(message)
            except (ValueError, TypeError, KeyError) as exc:
                self.refused[node] = str(exc)
                continue
            self.sites[node] = run
            accepted.append(message)
        for node in self.refused:
            self.sites.pop(node, None)
        return super().aggregate_train(server_round, accepted)


def _joint_spec(
    grid: Grid, nodes: Iterable[int], federation: str, profile: SpecProfile, *, epsilon: float, delta: float
) -> tuple[Spec, dict[int, str]]:
    content = spec_request(federation, profile, epsilon=epsilon, delta=delta)
    replies = grid.send_and_receive([Message(content, node, "query.spec") for node in nodes])
    specs, refused = [], {}
    for reply in replies:
        if reply.has_error():
            refused[reply.metadata.src_node_id] = str(reply.error.reason)
            continue
        spec = Spec.from_dict(json.loads(str(reply.content["spec"]["spec"])))
        spec.check_against(profile)
        specs.append((spec, int(reply.content["metrics"]["num-examples"])))  # type: ignore[arg-type]
    return weighted_mean(specs), refused


def run_build(grid: Grid, run_config: Mapping[str, Any]) -> None:
    """The ServerApp's main for a build (run config: `build_run_config`); writes `out`."""
    settings = BuildSettings.from_config(json.loads(str(run_config["settings"])))
    out = Path(str(run_config["out"]))
    nodes = list(grid.get_node_ids())
    with tempfile.TemporaryDirectory() as tmp:
        initial = initial_adapter(settings, Path(tmp))
        adapter_config = (Path(tmp) / "adapter_config.json").read_text()
    strategy = AdapterFedAvg(template=initial, nodes=len(nodes))
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial),
        num_rounds=settings.rounds,
        train_config=ConfigRecord(settings.to_config()),
    )
    if not strategy.sites:
        raise FailedPrecondition(
            "no site took part in the federated build: " + "; ".join(strategy.refused.values())
        )
    spec: Spec | None = None
    spec_refused: dict[int, str] = {}
    if run_config.get("profile"):
        spec, spec_refused = _joint_spec(
            grid,
            strategy.sites,
            settings.federation,
            SpecProfile.from_json(str(run_config["profile"])),
            epsilon=float(run_config["spec-epsilon"]),
            delta=float(run_config["spec-delta"]),
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(adapter_config)
    save_file(result.arrays.to_torch_state_dict(), str(out / ADAPTER_FILE), metadata={"format": "pt"})
    summary = {
        "federation": settings.federation,
        "settings": settings.to_config(),
        "sites": [asdict(run) for run in strategy.sites.values()],
        "refused": {str(node): reason for node, reason in {**strategy.refused, **spec_refused}.items()},
        "spec": None if spec is None else spec.to_dict(),
    }
    (out / FEDERATION_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def build_run_config(
    settings: BuildSettings,
    out: Path,
    *,
    profile: SpecProfile | None = None,
    spec_epsilon: float = 1.0,
    spec_delta: float = 1e-6,
) -> dict[str, str | float]:
    """The ServerApp's run config for a build (`flwr run --run-config` takes the same keys)."""
    return {
        "job": "build",
        "settings": json.dumps(settings.to_config()),
        "out": str(out),
        "profile": "" if profile is None else profile.to_json(),
        "spec-epsilon": spec_epsilon,
        "spec-delta": spec_delta,
    }
