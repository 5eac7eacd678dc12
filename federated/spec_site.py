"""A site's DP spec for a federation: released on the site, booked in its own ledger first.

The server names the market's profile and (epsilon, delta); the site releases the kernel mean
of its records with lmdock's Gaussian mechanism (`lmdock.client.spec_release.SpecBooking`: the
same release, checks and write-ahead booking as `lmdock search`), so what leaves is an
(epsilon, delta)-DP spec of its data set with its record count (public under replace-one).
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from lmdock.client.spec_release import SpecBooking
from lmdock.common.errors import InvalidArgument
from lmdock.common.profile import SpecProfile
from lmdock.federated.site import Site

__all__ = ["release_spec", "spec_request"]


def spec_request(federation: str, profile: SpecProfile, *, epsilon: float, delta: float) -> RecordDict:
    config: dict[
        str, str | int | float | bytes | bool | list[int] | list[float] | list[str] | list[bytes] | list[bool]
    ] = {
        "federation": federation,
        "profile": profile.to_json(),
        "epsilon": epsilon,
        "delta": delta,
    }
    return RecordDict({"config": ConfigRecord(config)})


def release_spec(message: Message, context: Context) -> Message:
    """The ClientApp's `query.spec` function (module docstring)."""
    site = Site.from_node_config(context.node_config)
    config = message.content["config"]
    if not isinstance(config, ConfigRecord):
        raise InvalidArgument("the request carries its settings as a ConfigRecord")
    try:
        profile = SpecProfile.from_json(str(config["profile"]))
        epsilon, delta = float(config["epsilon"]), float(config["delta"])  # type: ignore[arg-type]
        federation = str(config["federation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"a spec request is malformed: {exc}") from None
    data = site.read()
    ledger, _ = site.ledger(data)
    booking = SpecBooking.open(ledger, data.texts, epsilon=epsilon, delta=delta, dataset=site.dataset)
    spec, _debit = booking.spec(profile, destination=f"federated spec {federation} (site {site.name})")
    reply = RecordDict(
        {
            "spec": ConfigRecord({"spec": json.dumps(spec.to_dict()), "site": site.name}),
            "metrics": MetricRecord({"num-examples": len(data.texts)}),
        }
    )
    return Message(reply, reply_to=message)
