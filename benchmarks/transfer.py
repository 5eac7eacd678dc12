"""Upload and Download throughput of a ~100 MB package, as a ratio to a raw gRPC stream.

One market in this process as `lmdock-market serve` builds it (SQLite, the default profile,
open to anonymous publishers), a real signed package whose adapter is an untrained LoRA of
rank R on the packaged MiniLM (36,864 bytes per rank: R = 2,712 gives 100 MB), and beside it
a bare grpc.aio server (`raw_grpc.py`) in the same process, whose Put hashes (sha256) and
fsyncs what it receives and whose Get streams a file that the client hashes and fsyncs.

- upload: `MarketClient.upload` until the learnware is listed (the client hashes the file,
  the market stages it, then verifies and checks it where it lies), against raw Put of the
  same file;
- download: `MarketClient.download` (verified sha256), against raw Get;
- pull: download plus `AdapterCache.install` (signature, every file's hash, unpacked), as
  `lmdock pull` does, against raw Get;
- where an upload's time goes: the market's `read_package` and `check_package` alone.

Each figure is the median of `--repeats` runs. Prints one JSON object:

    python benchmarks/transfer.py [--rank 2712] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the checker needs no hub: base models are local

import grpc
from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient
from lmdock.common.errors import NotFound
from lmdock.common.package_reader import read_package
from lmdock.common.profile_factory import make_profile
from lmdock.server.app import create_server
from lmdock.server.auth import AccessPolicy
from lmdock.server.checks import check_package
from lmdock.server.identity import Role
from lmdock.server.market import Market
from packages import make_packages
from raw_grpc import RawClient, RawServer


def median_seconds(
    work: Callable[[], object], repeats: int, before: Callable[[], object] = lambda: None
) -> float:
    times = []
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rank", type=int, default=2712, help="LoRA rank: 36,864 bytes each")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    profile = make_profile()
    with tempfile.TemporaryDirectory(prefix="lmdock-transfer-") as tmp:
        work = Path(tmp)
        (package,) = make_packages(work / "pkgs", profile, 1, prefix="transfer", rank=args.rank)
        size = package.stat().st_size
        mb = size / 1e6
        market = Market.open(work / "market", profile=profile)
        _, admin_key = market.api_keys.create("root", Role.ADMIN)
        server, port = create_server(market, access=AccessPolicy.open_demo())
        server.start()
        raw = RawServer(work)
        raw_client = RawClient(raw.port)
        address = f"127.0.0.1:{port}"
        try:
            with MarketClient(address) as client, MarketClient(address, api_key=admin_key) as admin:

                def unpublish_if_listed() -> None:
                    with contextlib.suppress(NotFound):  # not listed yet
                        admin.unpublish("transfer-000")

                upload = median_seconds(lambda: client.upload(package), args.repeats, unpublish_if_listed)
                raw_upload = median_seconds(lambda: raw_client.put(package), args.repeats)
                dest = work / "download.tar"
                download = median_seconds(
                    lambda: client.download("transfer-000", dest),
                    args.repeats,
                    lambda: dest.unlink(missing_ok=True),
                )
                raw_download = median_seconds(lambda: raw_client.get(package, dest), args.repeats)
                info = client.get("transfer-000")
                cache = AdapterCache(work / "cache")

                def pull() -> None:
                    archive = cache.partial_path(info.package_sha256)
                    client.download("transfer-000", archive)
                    cache.install(info, archive)

                pulled = median_seconds(pull, args.repeats, lambda: cache.evict("transfer-000"))
            read = median_seconds(lambda: read_package(package), args.repeats)
            checked = read_package(package)
            check = median_seconds(lambda: check_package(checked, profile, market.base_models), args.repeats)
        finally:
            raw_client.close()
            raw.stop()
            server.stop(grace=None)
            market.close()
    print(
        json.dumps(
            {
                "package_mb": round(mb, 1),
                "repeats": args.repeats,
                "upload_mb_s": round(mb / upload, 1),
                "raw_upload_mb_s": round(mb / raw_upload, 1),
                "upload_ratio": round(raw_upload / upload, 3),
                "download_mb_s": round(mb / download, 1),
                "raw_download_mb_s": round(mb / raw_download, 1),
                "download_ratio": round(raw_download / download, 3),
                "pull_mb_s": round(mb / pulled, 1),
                "pull_ratio": round(raw_download / pulled, 3),
                "upload_parts_s": {"read_package": round(read, 3), "check_package": round(check, 3)},
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "grpcio": grpc.__version__,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
