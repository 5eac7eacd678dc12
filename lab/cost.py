"""What one search costs a client: seconds and bytes per spec, per search, per pull.

Measured on the embedded market over real gRPC on 127.0.0.1 (so network time is loopback
only). Bytes are the serialized request messages that leave the client (`WireRecorder`), and
for a pull the package size that comes back. Times are medians of repeats.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient
from lmdock.client.embedder import Embedder
from lmdock.client.operations import pull
from lmdock.client.spec_release import private_spec
from lmdock.common import serde
from lmdock.common.profile import SpecProfile
from lmdock.lab.building import Built

__all__ = ["measure_cost"]

T = TypeVar("T")


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 4)


def measure_cost(
    address: str,
    profile: SpecProfile,
    texts: Sequence[str],
    built: Sequence[Built],
    *,
    epsilon: float,
    delta: float,
    upload_seconds: Sequence[float],
    repeats: int = 3,
    searches: int = 30,
) -> dict[str, Any]:
    """Cost figures for a task of `texts` against the market at `address`."""
    embedder, load_seconds = _timed(lambda: Embedder(profile))
    spec_times = []
    spec = None
    for _ in range(repeats):
        spec, seconds = _timed(
            lambda: private_spec(texts, profile, epsilon=epsilon, delta=delta, embedder=embedder).spec
        )
        spec_times.append(seconds)
    assert spec is not None
    search_times, search_bytes = [], []
    with MarketClient(address) as client:
        for _ in range(searches):
            before = client.bytes_sent
            _, seconds = _timed(lambda: client.search(spec, top_k=5))
            search_times.append(seconds)
            search_bytes.append(client.bytes_sent - before)
        pull_times, pull_bytes = [], []
        for b in list(built)[:repeats]:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                pull(client, AdapterCache(Path(tmp)), b.recipe.card.id)
                pull_times.append(time.perf_counter() - started)
            pull_bytes.append(b.package.stat().st_size)
    train = [float(b.stats["train_seconds"]) for b in built]
    cpu = [float(b.stats["train_cpu_seconds"]) for b in built if "train_cpu_seconds" in b.stats]
    load = [float(b.stats["train_load_1m"]) for b in built if "train_load_1m" in b.stats]
    return {
        "task_records": len(texts),
        "embedder_load_seconds": round(load_seconds, 3),
        "spec": {
            "seconds_median": _median(spec_times),
            "values": int(spec.values.size),
            "bytes": len(serde.spec_to_pb(spec).SerializeToString()),
        },
        "search": {
            "seconds_median": _median(search_times),
            "request_bytes": int(statistics.median(search_bytes)),
            "market_learnwares": len(built),
        },
        "pull": {
            "seconds_median": _median(pull_times),
            "package_bytes_median": int(statistics.median(pull_bytes)),
        },
        "publish": {"upload_seconds_median": _median(upload_seconds) if upload_seconds else None},
        "training": {
            "seconds_median": _median(train),
            "seconds_total": round(sum(train), 1),
            "cpu_seconds_total": round(sum(cpu), 1) if len(cpu) == len(train) else None,
            # the 1-minute load average as each learnware finished training (older caches lack it)
            "load_1m_median": round(statistics.median(load), 2) if len(load) == len(train) else None,
            "package_bytes_median": int(statistics.median(b.stats["package_bytes"] for b in built)),
        },
    }
