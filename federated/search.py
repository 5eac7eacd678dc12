"""`lmdock federate search`, the server's side: a secure sum of the sites' noisy kernel sums.

Flower 1.42 has secure aggregation only as a legacy workflow: `SecAggPlusWorkflow` inside a
`DefaultWorkflow`, run with a `LegacyContext` and a legacy strategy, the sites running
`secaggplus_mod` and answering in the legacy `FitRes` form (`search_site`). `SecureSum` is that
strategy: one round, every site, and it keeps what SecAgg+ reveals (the mean of the sites'
vectors, which times their number is the exact integer sum) and each site's record count.
`run_search` turns the sum into the joint spec (`secure_spec`) and makes one ordinary Search
with it on the market, as any client does; it writes both to `out` as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from lmdock.client.connection import MarketClient
from lmdock.common.errors import FailedPrecondition
from lmdock.common.profile import SpecProfile
from lmdock.federated.search_site import search_config
from lmdock.federated.secure_spec import MODULUS, plan_secure_spec

__all__ = ["SecureSum", "run_search", "search_run_config"]


class SecureSum(LegacyFedAvg):
    """One round over all `sites`; keeps SecAgg+'s aggregate and the sites' record counts."""

    def __init__(self, sites: int, config: dict[str, Scalar]) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=sites,
            min_available_clients=sites,
            initial_parameters=ndarrays_to_parameters([np.zeros(1)]),
            on_fit_config_fn=lambda _round: config,
        )
        self.mean: np.ndarray | None = None
        self.records: list[int] = []

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results:
            return None, {}
        (self.mean,) = parameters_to_ndarrays(results[0][1].parameters)  # SecAgg+'s mean, for all
        self.records = [int(res.metrics["records"]) for _, res in results]
        return results[0][1].parameters, {}


def run_search(grid: Grid, context: Context) -> None:
    """The ServerApp's main for a search (run config: `search_run_config`); writes `out`."""
    run = context.run_config
    profile = SpecProfile.from_json(str(run["profile"]))
    sites, shares = len(list(grid.get_node_ids())), int(run["shares"])
    epsilon, delta = float(run["epsilon"]), float(run["delta"])
    plan = plan_secure_spec(profile, epsilon=epsilon, delta=delta, shares=shares, sites=sites)
    config = search_config(
        str(run["federation"]), profile, epsilon=epsilon, delta=delta, shares=shares, sites=sites
    )
    strategy = SecureSum(sites, config)
    secagg = SecAggPlusWorkflow(
        num_shares=sites,
        reconstruction_threshold=shares if shares >= 2 else 2,
        max_weight=1.0,
        clipping_range=float(plan.clip),
        quantization_range=2 * plan.clip,
        modulus_range=MODULUS,
    )
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=1), strategy=strategy)
    DefaultWorkflow(fit_workflow=secagg)(grid, legacy)
    if strategy.mean is None:
        raise FailedPrecondition("the secure sum did not complete: too few sites answered")
    contributors = len(strategy.records)
    total = np.rint(strategy.mean * contributors)
    spec = plan.joint_spec(total, records=sum(strategy.records), contributors=contributors)
    summary: dict[str, Any] = {
        "spec": spec.to_dict(),
        "sites": sites,
        "contributors": contributors,
        "records": sum(strategy.records),
    }
    if run.get("market"):
        with MarketClient(str(run["market"])) as market:
            result = market.search(spec, top_k=int(run.get("top-k", 5)))
        summary["matches"] = [
            {"id": m.learnware_id, "score": m.score, "distance": m.distance} for m in result.matches
        ]
    Path(str(run["out"])).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def search_run_config(
    federation: str,
    profile: SpecProfile,
    out: Path,
    *,
    epsilon: float,
    delta: float,
    shares: int,
    market: str = "",
    top_k: int = 5,
) -> dict[str, str | int | float]:
    """The ServerApp's run config for a search (`flwr run --run-config` takes the same keys)."""
    return {
        "job": "search",
        "federation": federation,
        "profile": profile.to_json(),
        "out": str(out),
        "epsilon": epsilon,
        "delta": delta,
        "shares": shares,
        "market": market,
        "top-k": top_k,
    }
