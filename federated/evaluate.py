"""`lmdock federate evaluate`, the server's side: re-rank a search's top k by the sites' DP counts.

Flower federated evaluation on the Message API: one `evaluate` message to every site
(`evaluate_site`), whose reply holds its noised counts of correct answers per candidate and its
record count. The joint accuracy of candidate l is sum_sites noised c_l / sum_sites n: unbiased,
with standard deviation sqrt(sites) sigma / N, and as private as each site's release (parallel
composition: each record is in one site). The candidates are re-ordered by it; the spec ranking
only says whose training data looks like the sites' data, this says whose answers are right.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from lmdock.common.errors import FailedPrecondition
from lmdock.common.mechanism import calibrate_vector
from lmdock.federated.evaluate_site import evaluation_request

__all__ = ["evaluate_run_config", "run_evaluate"]


def run_evaluate(grid: Grid, context: Context) -> None:
    """The ServerApp's main for an evaluation (run config: `evaluate_run_config`); writes `out`."""
    run = context.run_config
    candidates = [c for c in str(run["candidates"]).split(",") if c]
    epsilon, delta = float(run["epsilon"]), float(run["delta"])
    content = evaluation_request(
        str(run["federation"]), str(run["market"]), candidates, epsilon=epsilon, delta=delta
    )
    messages = [Message(content, node, MessageType.EVALUATE) for node in grid.get_node_ids()]
    correct, records, refused = [0.0] * len(candidates), 0, {}
    for reply in grid.send_and_receive(messages):
        metrics = None if reply.has_error() else reply.content.get("metrics")
        if not isinstance(metrics, MetricRecord):
            refused[str(reply.metadata.src_node_id)] = (
                str(reply.error.reason) if reply.has_error() else "no counts"
            )
            continue
        records += int(metrics["num-examples"])  # type: ignore[arg-type]
        correct = [c + float(metrics[f"correct-{i}"]) for i, c in enumerate(correct)]  # type: ignore[arg-type]
    if records == 0:
        raise FailedPrecondition("no site evaluated the candidates: " + "; ".join(refused.values()))
    sites = len(messages) - len(refused)
    sigma = calibrate_vector(
        epsilon=epsilon, delta=delta, sensitivity=math.sqrt(len(candidates)), dim=len(candidates)
    ).sigma
    ranked = sorted(
        ({"id": c, "spec_rank": i + 1, "accuracy": correct[i] / records} for i, c in enumerate(candidates)),
        key=lambda r: -float(r["accuracy"]),  # type: ignore[arg-type]
    )
    summary: dict[str, Any] = {
        "ranking": ranked,
        "records": records,
        "sites": sites,
        "accuracy_sd": math.sqrt(sites) * sigma / records,
        "epsilon": epsilon,
        "delta": delta,
        "refused": refused,
    }
    Path(str(run["out"])).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def evaluate_run_config(
    federation: str, market: str, candidates: list[str], out: Path, *, epsilon: float, delta: float
) -> dict[str, str | float]:
    """The ServerApp's run config for an evaluation (`flwr run --run-config` takes the same keys)."""
    return {
        "job": "evaluate",
        "federation": federation,
        "market": market,
        "candidates": ",".join(candidates),
        "out": str(out),
        "epsilon": epsilon,
        "delta": delta,
    }
