"""The market's blocking work (database, blob files, package checks) on a bounded thread pool.

The gRPC edge runs on grpc.aio's event loop; anything that may block goes through
`Workers.run`, so that Health and every other call keep being answered while it runs. A
stream waiting for its caller holds no worker: only its next chunk's write or read does.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Workers", "one_blas_thread"]

T = TypeVar("T")


class Workers:
    def __init__(self, max_workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="market")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def one_blas_thread() -> None:
    """Run BLAS (each search's matrix-vector product) on one thread in this process.

    The worker pool already runs searches side by side; BLAS threads on top of it oversubscribe
    the cores and thrash (`benchmarks/rpc.py`, 10k learnwares, 8 callers: 86 Search QPS with
    OpenBLAS' own threads, 657 with one). Called by `lmdock-market serve`, whose process is the
    market's alone; an embedded market leaves its host process's BLAS as it is.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
