"""Crash safety: kill -9 the market during uploads, and the client during pulls and searches.

Everything runs as real processes on 127.0.0.1, in bounded loops:

- market: `lmdock-market serve` (SQLite, open to anonymous publishers so that no key set-up
  is needed) takes concurrent uploads and unpublishes; at a random moment it is killed with
  SIGKILL and started again on the same data folder. After every restart we count
  learnwares that are listed but cannot be downloaded whole (partial), acknowledged uploads
  that are gone (lost), blobs that no listed learnware references (orphans), and files left
  in the blob store's temp folder.
- client pulls: `lmdock pull` is killed at a random moment; afterwards every cached entry
  must verify (`AdapterCache.load`) and a final pull must succeed.
- client searches: `lmdock search` (a real private spec, booked in the ledger) is killed at a
  random moment; afterwards `lmdock ledger verify` must pass.

Prints one JSON object; every count should be 0 and every verification "ok":

    python benchmarks/crash.py [--market-kills 8] [--pull-kills 6] [--search-kills 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient
from lmdock.common.errors import LmdockError
from packages import make_packages


def start_market(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    serve = ["serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--grace", "1"]
    open_to_all = ["--allow-anonymous", "publisher", "--rate-limit", "0", "--max-streams", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmdock.server.cli", *serve, *open_to_all],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the market did not start (exit {proc.wait()})")
    return proc, json.loads(line)["listening"]


def create_admin_key(data_dir: Path) -> str:
    """An admin may unpublish anything (anonymous publishers may only upload)."""
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmdock.server.cli",
            "keys",
            "create",
            "--data-dir",
            str(data_dir),
            "--principal",
            "ops",
            "--role",
            "admin",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(created.stdout)["api_key"])


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def blob_files(data_dir: Path) -> tuple[set[str], int]:
    """sha256 of every committed blob, and the number of files left in the temp folder.

    Read from disk here, not through `LocalBlobStore`: opening a store empties its temp folder,
    which is what we count."""
    root = data_dir / "blobs"
    blobs = {p.parent.name + p.name for p in root.glob("??/*") if p.is_file()}
    temps = sum(1 for p in (root / "tmp").rglob("*") if p.is_file()) if (root / "tmp").is_dir() else 0
    return blobs, temps


def market_round(
    address: str,
    admin_key: str,
    packages: list[Path],
    acked: dict[str, str],
    uploaded: list[int],
    stop: threading.Event,
) -> None:
    """Upload (and now and then unpublish) from three threads until the market dies."""

    def worker(mine: list[Path]) -> None:
        with MarketClient(address, timeout=30) as client, MarketClient(address, api_key=admin_key) as admin:
            for package in mine:
                if stop.is_set():
                    return
                try:
                    info = client.upload(package, stream_timeout=30)
                    acked[info.card.id] = info.package_sha256
                    uploaded[0] += 1
                    if random.random() < 0.3:
                        # asked to go: no longer owed, whether or not the reply outlives the market
                        acked.pop(info.card.id, None)
                        admin.unpublish(info.card.id)
                except LmdockError:  # the market died under us, or the package is already there
                    continue

    random.shuffle(packages)
    threads = [threading.Thread(target=worker, args=(packages[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def check_market(address: str, data_dir: Path, acked: dict[str, str], work: Path) -> dict[str, int]:
    with MarketClient(address, timeout=30) as client:
        listed = {lw.card.id: lw.package_sha256 for lw in client.list()}
        partial = 0
        for learnware_id in listed:
            (work / "check.tar").unlink(missing_ok=True)  # a download resumes a file that exists
            try:
                client.download(learnware_id, work / "check.tar")  # checks size and sha256
            except LmdockError:
                partial += 1
    lost = sum(1 for learnware_id, sha in acked.items() if listed.get(learnware_id) != sha)
    blobs, temps = blob_files(data_dir)
    return {
        "partial": partial,
        "lost_acknowledged": lost,
        "orphan_blobs": len(blobs - set(listed.values())),
        "missing_blobs": len(set(listed.values()) - blobs),
        "temp_files": temps,
    }


def market_kills(work: Path, kills: int) -> tuple[dict[str, object], Path]:
    """The counts, and one package never uploaded (for the client's part)."""
    data_dir = work / "market"
    admin_key = create_admin_key(data_dir)
    proc, address = start_market(data_dir)
    with MarketClient(address) as client:
        profile = client.profile()
    *packages, spare = make_packages(work / "packages", profile, 12 * kills + 1)
    acked: dict[str, str] = {}
    uploaded = [0]  # acknowledged uploads so far, unpublished ones included
    totals = {"partial": 0, "lost_acknowledged": 0, "orphan_blobs": 0, "missing_blobs": 0, "temp_files": 0}
    for i in range(kills):
        stop = threading.Event()
        batch = packages[i * 12 : (i + 1) * 12]
        uploads = threading.Thread(
            target=market_round, args=(address, admin_key, batch, acked, uploaded, stop)
        )
        uploads.start()
        # die mid-upload: after a random number of acknowledged uploads, plus a random moment
        target, deadline = uploaded[0] + random.randint(0, 8), time.monotonic() + 30
        while uploaded[0] < target and uploads.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, 0.4))
        kill(proc)
        stop.set()
        uploads.join()
        proc, address = start_market(data_dir)
        for name, value in check_market(address, data_dir, acked, work).items():
            totals[name] += value
    kill(proc)
    return {"kills": kills, "acknowledged_uploads": uploaded[0], "listed_at_end": len(acked), **totals}, spare


def lmdock(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmdock.client.cli", *args]


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds one uninterrupted run takes: kills are drawn around it."""
    started = time.monotonic()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.monotonic() - started


def killed_after(command: list[str], seconds: float, env: dict[str, str] | None = None) -> None:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def pull_kills(work: Path, address: str, learnware_id: str, kills: int) -> dict[str, object]:
    cache_dir = work / "cache"
    pull = lmdock("pull", "--market", address, "--cache", str(cache_dir), learnware_id)
    full = timed([*pull[:-1], "--cache", str(work / "cache-timing"), learnware_id])
    for _ in range(kills):
        killed_after(pull, random.uniform(0.5, 1.1) * full)
    cache = AdapterCache(cache_dir)
    corrupt = 0
    for entry in cache.entries():
        try:
            cache.load(entry.learnware_id)
        except LmdockError:
            corrupt += 1
    final = subprocess.run(pull, capture_output=True)
    cache.load(learnware_id)
    return {
        "kills": kills,
        "seconds_per_pull": round(full, 1),
        "corrupt_entries": corrupt,
        "final_pull_exit": final.returncode,
    }


def search_kills(work: Path, address: str, kills: int) -> dict[str, object]:
    task = work / "task.jsonl"
    notes = (json.dumps({"text": f"note {i}: the patient reports symptom {i % 7}"}) for i in range(60))
    task.write_text("".join(note + "\n" for note in notes))
    # one ledger per home: the timing run books in a home of its own
    timing_home, home = (os.environ | {"LMDOCK_HOME": str(work / h)} for h in ("timing-home", "home"))
    ledger = work / "home" / "ledger.jsonl"
    # epsilon 0.5 over 60 notes: sigma about 0.27, inside the default profile's max_sigma (0.76)
    search = lmdock("search", "--market", address, "--data", str(task), "--epsilon", "0.5")
    full = timed(search, env=timing_home)
    for _ in range(kills):
        killed_after([*search, "--budget-epsilon", "100"], random.uniform(0.5, 1.1) * full, env=home)
    verify = subprocess.run(lmdock("ledger", "verify"), capture_output=True, text=True, env=home)
    releases = sum(1 for line in ledger.read_text().splitlines() if line.strip()) if ledger.exists() else 0
    return {
        "kills": kills,
        "seconds_per_search": round(full, 1),
        "ledger_lines": releases,
        "ledger_verify": "ok" if verify.returncode == 0 else verify.stderr.strip()[-300:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--market-kills", type=int, default=8)
    parser.add_argument("--pull-kills", type=int, default=6)
    parser.add_argument("--search-kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lmdock-crash-") as tmp:
        work = Path(tmp)
        market, spare = market_kills(work, args.market_kills)
        proc, address = start_market(work / "market")
        try:
            with MarketClient(address) as client:
                pulled = client.upload(spare).card.id
            pulls = pull_kills(work, address, pulled, args.pull_kills)
            searches = search_kills(work, address, args.search_kills)
        finally:
            kill(proc)
    print(
        json.dumps(
            {
                "market_killed_during_uploads": market,
                "client_killed_during_pulls": pulls,
                "client_killed_during_searches": searches,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
