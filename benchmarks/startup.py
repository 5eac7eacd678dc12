"""Time from `lmdock-market serve` to a listening port, and the market's memory then, per backend.

A real SQLite catalogue of N learnwares (exact 384-dimensional specs of the default profile,
clustered as in benchmarks/search.py) is written once per size; then `lmdock-market serve`
starts on it as a subprocess, and the time to its "listening" line and its resident memory are
read. The hnsw and ivf backends start twice: the first start builds and saves the index, the
second loads it. raw_spec_mb is N * D * 4 bytes, the floor for any index holding the vectors. Prints
one JSON object:

    python benchmarks/startup.py [--sizes 10000,100000] [--backends exact,hnsw,ivf] [--keep DIR]

`--keep DIR` keeps each size's catalogue in DIR/<n> and reuses it on the next run (a 1M
catalogue takes minutes to write); a persisted index found there is removed first, so the
"first" start still builds it, unless `--keep-index` is given: then hnsw and ivf start only on
the index kept there (the "persisted" row; a 1M graph takes 6-13 minutes to build).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from lmdock.server.config import load_or_create_profile
from lmdock.server.db import Database
from lmdock.server.market import default_db_url
from lmdock.server.tables import LearnwareRow
from sqlalchemy import insert

MARKET = str(Path(sys.executable).with_name("lmdock-market"))
PRIVACY = json.dumps(
    {
        "epsilon": None,
        "delta": 0.0,
        "sigma": 0.0,
        "size_bucket": 0,
        "neighbouring": "replace-one",
        "unit": "record",
    }
)


def _catalogue(data_dir: Path, n: int) -> None:
    profile = load_or_create_profile(data_dir)
    db = Database(default_db_url(data_dir))
    rng = np.random.default_rng(n)
    dim = profile.feature_dim
    centres = rng.standard_normal((max(n // 100, 10), dim), dtype=np.float32)
    centres *= 0.7 / np.linalg.norm(centres, axis=1, keepdims=True)
    for start in range(0, n, 10_000):
        count = min(10_000, n - start)
        rows = centres[rng.integers(0, len(centres), count)]
        rows += 0.02 * rng.standard_normal((count, dim), dtype=np.float32)
        values = [
            {
                "id": f"lw-{start + i:07d}",
                "name": f"learnware {start + i}",
                "domain": "bench",
                "base_model": "-",
                "licence": "-",
                "description": "",
                "publisher": "bench",
                "version": "1",
                "task_kind": "generation",
                "labels": "[]",
                "profile_id": profile.profile_id,
                "spec_version": 1,
                "spec_values": rows[i].astype("<f4").tobytes(),
                "spec_privacy": PRIVACY,
                "package_sha256": f"{start + i:064x}",
                "package_size": 1,
                "signing_key_id": "-",
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
                "eval_scores": "{}",
                "dp_trained": False,
                "dp_epsilon": 0.0,
            }
            for i in range(count)
        ]
        with db.session() as session:
            session.execute(insert(LearnwareRow), values)
            session.commit()
    db.close()


def _reuse_or_write(data_dir: Path, n: int, *, keep_index: bool) -> None:
    """Write the catalogue unless a complete one is there; drop any persisted index unless kept."""
    done = data_dir / "catalogue-written"
    if not done.exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        _catalogue(data_dir, n)
        done.touch()
    if not keep_index:
        for index in data_dir.glob("index*"):
            shutil.rmtree(index) if index.is_dir() else index.unlink()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start(data_dir: Path, backend: str) -> dict[str, float]:
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [MARKET, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--index", backend]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        serving_s = time.perf_counter() - started
        if "listening" not in line:
            raise RuntimeError(f"the market did not start: {line!r}")
        rss = _rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {"serving_s": round(serving_s, 2), "rss_mb": round(rss, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="exact,hnsw")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the catalogues in this folder")
    parser.add_argument("--keep-index", action="store_true", help="with --keep: reuse a persisted index")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    for n in (int(x) for x in args.sizes.split(",")):
        data_dir = args.keep / str(n) if args.keep else Path(tempfile.mkdtemp(prefix="lmdock-startup-"))
        try:
            started = time.perf_counter()
            _reuse_or_write(data_dir, n, keep_index=args.keep_index)
            written_s = time.perf_counter() - started
            common = {
                "n": n,
                "raw_spec_mb": round(n * 384 * 4 / 2**20, 1),
                "catalogue_write_s": round(written_s, 1),
            }
            for backend in args.backends.split(","):
                persisted = backend != "exact"
                if not (persisted and args.keep_index):
                    rows.append({"backend": backend, "start": "first", **common, **_start(data_dir, backend)})
                if persisted:
                    rows.append(
                        {"backend": backend, "start": "persisted", **common, **_start(data_dir, backend)}
                    )
        finally:
            if not args.keep:
                shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps({"machine": {"cpus": os.cpu_count()}, "rows": rows}))


if __name__ == "__main__":
    main()
