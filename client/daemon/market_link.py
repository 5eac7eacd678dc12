"""The daemon's way to the market: a configured client, resumable downloads with backoff.

The client speaks TLS when the config asks for it (a CA, a pinned certificate, mutual TLS with
a client certificate, or the system's roots) and sends the market API key read from an
owner-only file; `lmdock.client.channel` refuses to send a key in the clear to another host.

Only UNAVAILABLE (the market is down or the connection broke) is retried: every other status
is an answer. A broken download keeps its partial file, and the next try resumes from it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient, TlsOptions, WireRecorder
from lmdock.client.daemon.config import MarketSettings
from lmdock.client.files import read_secret
from lmdock.client.operations import pull
from lmdock.client.progress import Progress
from lmdock.common.errors import FailedPrecondition, LmdockError
from lmdock.common.package import Manifest

__all__ = ["connect", "fetch_learnware", "retry_unavailable"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BACKOFF_S = 30.0


def connect(settings: MarketSettings, *, recorder: WireRecorder | None = None) -> MarketClient:
    """A client for the configured market: TLS (CA, pin, client certificate) and API key as set.

    `recorder` counts every request byte sent (what `lmdock task show` reports).
    """
    if not settings.address:
        raise FailedPrecondition(
            "no market is configured: set market.address in the config to search and download"
        )
    tls = None
    if settings.uses_tls:
        tls = TlsOptions(
            ca_file=_path(settings.tls_ca),
            cert_file=_path(settings.client_cert),
            key_file=_path(settings.client_key),
            pin_sha256=settings.tls_pin_sha256,
            server_name=settings.tls_server_name,
        )
    api_key = (
        read_secret(Path(settings.api_key_file), what="market API key") if settings.api_key_file else None
    )
    return MarketClient(
        settings.address, timeout=settings.timeout_s, recorder=recorder, tls=tls, api_key=api_key
    )


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def retry_unavailable(
    call: Callable[[], T],
    *,
    attempts: int,
    backoff_s: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, tried up to `attempts` times while it fails with UNAVAILABLE (exponential backoff)."""
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except LmdockError as exc:
            if exc.status != "UNAVAILABLE" or attempt == attempts:
                raise
            log.warning(
                "%s: market unavailable (try %d of %d); retrying in %.2gs", what, attempt, attempts, delay
            )
            sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextmanager
def _watch_growth(path: Path, total: int, progress: Progress | None) -> Iterator[None]:
    """Report the size of a file being downloaded into, every 0.1 s, while the block runs."""
    if progress is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            try:
                size = path.stat().st_size
            except OSError:  # not created yet, or already installed and removed
                size = 0
            progress(min(size, total), total)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    progress(total, total)


def fetch_learnware(
    open_client: Callable[[], MarketClient],
    cache: AdapterCache,
    learnware_id: str,
    *,
    attempts: int,
    backoff_s: float,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Manifest:
    """Download (resuming), verify and cache a learnware, retrying while the market is unavailable.

    Each try opens a fresh client: a channel that saw the market go away waits out its own
    reconnection backoff, a new one connects at once.
    """

    def attempt() -> Manifest:
        with open_client() as client:
            info = client.get(learnware_id)
            with _watch_growth(cache.partial_path(info.package_sha256), info.package_size, progress):
                return pull(client, cache, learnware_id)

    return retry_unavailable(
        attempt, attempts=attempts, backoff_s=backoff_s, what=f"download of {learnware_id}", sleep=sleep
    )
