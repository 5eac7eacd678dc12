"""A federation on one machine: every site's ClientApp and the ServerApp in this process.

What `lmdock federate` runs (and the tests): the sites are named `NAME=TASKFILE`, each with its
own ledger under `home/NAME/ledger.jsonl`, standing in for each site's own machine and
$LMDOCK_HOME; the apps and the messages are Flower's (`local_grid`). Deployment runs the same
apps under a SuperLink with one SuperNode per site (docs/federated.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmdock.client.privacy_unit import default_name
from lmdock.common.accounting import Budget
from lmdock.common.errors import InvalidArgument
from lmdock.common.profile import SpecProfile
from lmdock.federated.apps import client, search_client, server
from lmdock.federated.build import FEDERATION_FILE, build_run_config
from lmdock.federated.build_site import BuildSettings
from lmdock.federated.evaluate import evaluate_run_config
from lmdock.federated.local_grid import run_local
from lmdock.federated.search import search_run_config
from lmdock.federated.secure_spec import MAX_SITES
from lmdock.federated.site import Site

__all__ = ["federate_build", "federate_evaluate", "federate_search", "sites_from"]


def sites_from(pairs: Sequence[str], home: Path, *, budget_epsilon: float) -> list[Site]:
    """Sites from `NAME=TASKFILE` pairs, each with its ledger under `home/NAME/`."""
    sites = []
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not path:
            raise InvalidArgument(f"--site takes NAME=TASKFILE, got {pair!r}")
        data = Path(path)
        if not data.is_file():
            raise InvalidArgument(f"site {name}'s task file {data} does not exist")
        site = Site.from_node_config(
            {
                "site": name,
                "data": str(data),
                "ledger": str(home / name / "ledger.jsonl"),
                "dataset": default_name(data),
            }
        )
        sites.append(
            Site(
                site.name,
                site.data,
                site.ledger_path,
                site.dataset,
                Budget(epsilon=budget_epsilon, delta=1e-6),
            )
        )
    if not 2 <= len(sites) <= MAX_SITES or len({s.name for s in sites}) != len(sites):
        raise InvalidArgument(f"a federation needs 2 to {MAX_SITES} sites with distinct names")
    return sites


def federate_build(
    sites: Sequence[Site],
    settings: BuildSettings,
    out: Path,
    *,
    profile: SpecProfile,
    spec_epsilon: float,
    spec_delta: float,
) -> dict[str, Any]:
    """Train one adapter over the sites and write the build folder `out`; return its summary."""
    if out.exists() and any(out.iterdir()):
        raise InvalidArgument(f"{out} already exists and is not empty: choose another --out")
    run_local(
        server,
        client,
        {s.name: s.node_config() for s in sites},
        run_config=build_run_config(
            settings, out, profile=profile, spec_epsilon=spec_epsilon, spec_delta=spec_delta
        ),
    )
    summary: dict[str, Any] = json.loads((out / FEDERATION_FILE).read_text())
    return summary


def federate_search(
    sites: Sequence[Site],
    profile: SpecProfile,
    out: Path,
    *,
    epsilon: float,
    delta: float,
    shares: int,
    market: str,
    top_k: int,
) -> dict[str, Any]:
    """The sites' joint spec through SecAgg+ and one Search with it; return the summary."""
    run_local(
        server,
        search_client,
        {s.name: {**s.node_config(), "honest-sites": shares} for s in sites},
        run_config=search_run_config(
            uuid.uuid4().hex,
            profile,
            out,
            epsilon=epsilon,
            delta=delta,
            shares=shares,
            market=market,
            top_k=top_k,
        ),
    )
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def federate_evaluate(
    sites: Sequence[Site], market: str, candidates: Sequence[str], out: Path, *, epsilon: float, delta: float
) -> dict[str, Any]:
    """The candidates re-ranked by the sites' DP counts of correct answers; return the summary."""
    run_local(
        server,
        client,
        {s.name: s.node_config() for s in sites},
        run_config=evaluate_run_config(
            uuid.uuid4().hex, market, list(candidates), out, epsilon=epsilon, delta=delta
        ),
    )
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary
