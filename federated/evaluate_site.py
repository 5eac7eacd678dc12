"""A site's part of `lmdock federate evaluate`: DP counts of correct answers, per candidate.

The server names k learnwares (the top k of a search) and the market that holds them. The site
pulls each one (verified like any pull: sha256 and publisher signature), runs it on its own
labelled records and counts the correct answers c_1..c_k. Replacing one record moves each count
by at most 1, so the counts have replace-one L2 sensitivity sqrt(k); they are released with
lmdock's Gaussian mechanism on a grid (`common.mechanism.calibrate_vector` + `add_noise`:
discrete Gaussian noise from the OS CSPRNG), booked in the site's own ledger first. Only the
noised counts and the record count (public under replace-one) leave the site.
"""

from __future__ import annotations

import math

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient
from lmdock.client.operations import count_matches, pull, run_task
from lmdock.common.calibration import validate_privacy
from lmdock.common.errors import InvalidArgument
from lmdock.common.mechanism import add_noise, calibrate_vector
from lmdock.federated.site import Site

__all__ = ["MAX_CANDIDATES", "evaluate_candidates", "evaluation_request"]

MAX_CANDIDATES = 20


def evaluation_request(
    federation: str, market: str, candidates: list[str], *, epsilon: float, delta: float
) -> RecordDict:
    config = ConfigRecord(
        {
            "federation": federation,
            "market": market,
            "candidates": candidates,
            "epsilon": epsilon,
            "delta": delta,
        }
    )
    return RecordDict({"config": config})


def evaluate_candidates(message: Message, context: Context) -> Message:
    """The ClientApp's evaluate function (module docstring)."""
    site = Site.from_node_config(context.node_config)
    config = message.content["config"]
    if not isinstance(config, ConfigRecord):
        raise InvalidArgument("the request carries its settings as a ConfigRecord")
    try:
        candidates = [str(c) for c in config["candidates"]]  # type: ignore[union-attr]
        epsilon, delta = float(config["epsilon"]), float(config["delta"])  # type: ignore[arg-type]
        market, federation = str(config["market"]), str(config["federation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"an evaluation request is malformed: {exc}") from None
    validate_privacy(epsilon=epsilon, delta=delta)
    if not 1 <= len(candidates) <= MAX_CANDIDATES or len(set(candidates)) != len(candidates):
        raise InvalidArgument(f"an evaluation names 1 to {MAX_CANDIDATES} distinct learnwares")
    data = site.read()
    if not data.has_labels:
        raise InvalidArgument(f"site {site.name}'s data has no labels to evaluate on")
    calibration = calibrate_vector(
        epsilon=epsilon, delta=delta, sensitivity=math.sqrt(len(candidates)), dim=len(candidates)
    )
    ledger, dataset = site.ledger(data)
    cache = AdapterCache(site.ledger_path.parent / "adapters")
    with MarketClient(market) as client:
        for learnware_id in candidates:
            pull(client, cache, learnware_id)
    ledger.record(
        dataset,
        calibration.cost,
        kind="evaluation",
        destination=f"federated evaluation {federation} (site {site.name})",
    )
    gold = [str(y) for y in data.labels]
    counts = [
        float(count_matches(run_task(cache, c, data, device="cpu").predictions, gold)) for c in candidates
    ]
    noised = add_noise(counts, calibration)
    metrics: dict[str, int | float | list[int] | list[float]] = {"num-examples": len(data.texts)}
    metrics.update({f"correct-{i}": float(v) for i, v in enumerate(noised)})
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)
