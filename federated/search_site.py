"""A site's part of `lmdock federate search`: its noisy kernel sum, into Flower's SecAgg+.

The ClientApp's train function runs under `secaggplus_mod` (Flower's SecAgg+ client: key
setup, key shares, masking, unmasking), which calls it once, in the stage that collects the
masked vectors, and expects Flower's legacy `FitRes` back. The site reads the request (the
market's profile, epsilon, delta, how many sites and how many noise shares), refuses a share
count above what its own node config trusts (`honest-sites`, default 2: the number of sites it
believes will not collude with the aggregator), books the release in its own ledger, and only
then answers with y_j (`secure_spec`) as floats holding integers, weight 1 (SecAgg+'s maximum,
so its quantization is exact) and its record count in the metrics.
"""

from __future__ import annotations

from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import Context, Message
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from lmdock.client.spec_release import features_of
from lmdock.common.errors import InvalidArgument, PermissionDenied
from lmdock.common.profile import SpecProfile
from lmdock.federated.secure_spec import SecureSpecPlan, plan_secure_spec
from lmdock.federated.site import Site

__all__ = ["HONEST_SITES", "contribute", "search_config"]

#: How many sites' noise a site relies on unless its node config says otherwise.
HONEST_SITES = 2


def search_config(
    federation: str, profile: SpecProfile, *, epsilon: float, delta: float, shares: int, sites: int
) -> dict[str, Any]:
    """What the server asks each site for (the legacy FitIns config)."""
    return {
        "federation": federation,
        "profile": profile.to_json(),
        "epsilon": epsilon,
        "delta": delta,
        "shares": shares,
        "sites": sites,
    }


def _plan(config: dict[str, Any], site: Site, trusted: int) -> tuple[str, SecureSpecPlan]:
    try:
        profile = SpecProfile.from_json(str(config["profile"]))
        shares, sites = int(config["shares"]), int(config["sites"])
        epsilon, delta = float(config["epsilon"]), float(config["delta"])
        federation = str(config["federation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"a search request is malformed: {exc}") from None
    if shares > trusted:
        raise PermissionDenied(
            f"site {site.name} trusts {trusted} sites not to collude with the aggregator, and the "
            f"request relies on the noise of {shares}: refused"
        )
    return federation, plan_secure_spec(profile, epsilon=epsilon, delta=delta, shares=shares, sites=sites)


def contribute(message: Message, context: Context) -> Message:
    """The ClientApp's train function of a federated search (under `secaggplus_mod`)."""
    site = Site.from_node_config(context.node_config)
    trusted = int(str(context.node_config.get("honest-sites", HONEST_SITES)))
    fitins = compat.recorddict_to_fitins(message.content, keep_input=True)
    federation, plan = _plan(dict(fitins.config), site, trusted)
    data = site.read()
    ledger, dataset = site.ledger(data)
    features = features_of(data.texts, plan.profile)
    ledger.record(
        dataset,
        plan.calibration.cost,
        kind="spec",
        destination=f"federated search {federation} (site {site.name}, secure sum)",
    )
    y = plan.contribution(features).astype(np.float64)
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters([y]),
        num_examples=1,
        metrics={"records": len(data.texts)},
    )
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=message)
