"""The learnware a federation built, as a normal signed package (format v1).

Its manifest's `training` states the guarantee as it is:

    dp: true, epsilon/delta   the largest (epsilon, delta) any site's DP-SGD run was booked at:
                              per record (replace-one), each record being in one site's data
    federated.unit            the privacy unit and relation
    federated.sites           each site: records, epsilon, delta, noise multiplier, sample rate, steps
    federated.trusted         who must be trusted for what
    federated.spec            how the spec was made (each site's DP spec, count-weighted)

The spec carries its own (epsilon, delta) (`joint_spec`); a site's two releases (training and
spec) compose in its own ledger, which holds the total.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.common.card import Card
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import REQUIRED_FILES, Manifest, write_package
from lmdock.common.spec import Spec
from lmdock.federated.build import FEDERATION_FILE
from lmdock.federated.build_site import BuildSettings

__all__ = ["federated_training", "package_federation"]

TRUSTED = (
    "for privacy, nobody: each site adds its DP-SGD noise and its spec noise on its own machine, "
    "so what the aggregator and the other sites see is DP; the aggregator is trusted to average "
    "honestly (integrity of the model, not privacy)"
)


def federated_training(summary: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `training` object of a federated build (module docstring)."""
    sites, settings = summary["sites"], summary["settings"]
    return {
        "dp": True,
        "epsilon": max(float(s["epsilon"]) for s in sites),
        "delta": max(float(s["delta"]) for s in sites),
        "records": sum(int(s["records"]) for s in sites),
        "federated": {
            "federation": summary["federation"],
            "aggregation": "FedAvg of the adapter's tensors weighted by record count (Flower)",
            "rounds": settings["rounds"],
            "local_epochs": settings["local-epochs"],
            "unit": "one record of one site, replace-one; DP-SGD (Opacus, Poisson sampling) on each site",
            "accountant": "pld",
            "sites": sites,
            "trusted": TRUSTED,
            "spec": "count-weighted mean of each site's DP spec (sigma combined accordingly)",
        },
    }


def package_federation(folder: Path, out: Path, *, card: Card, key: Ed25519PrivateKey | None) -> Manifest:
    """Package the federated build in `folder` (`run_build`'s output) as a learnware."""
    try:
        summary = json.loads((folder / FEDERATION_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"{folder} is not a federated build ({FEDERATION_FILE}): {exc}") from None
    if summary.get("spec") is None:
        raise InvalidArgument(f"{folder} has no joint spec: build it with the market's profile")
    settings = BuildSettings.from_config(summary["settings"])
    return write_package(
        out,
        files={name: folder / name for name in REQUIRED_FILES},
        key=key,
        card=card,
        base_model=settings.base_model,
        task=settings.task,
        spec=Spec.from_dict(summary["spec"]),
        training=federated_training(summary),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
