"""How long the command line takes: to a clear error for everyday mistakes, and a search end to end.

Each command runs as a user runs it, a fresh `python -m lmdock.client.cli` process (the `lmdock`
entry point), timed from start to exit; beside them, bare `python -c pass` in the same run, the
floor any command pays. The mistakes (issue 19 item 8): `lmdock run` of a learnware not in the
cache, `lmdock pull` of one the market does not have, a second `lmdock daemon` on a state folder
in use, a bad flag, and `lmdock-market keys create`. The searches: `lmdock search` of 50 and of
300 texts (ε = 1) against a market in this process listing `--learnwares` learnwares of exact
specs (clustered like real ones), with a fresh ledger each time; the embedder loads in the
command, as it does for a user, from a model cache of the run's own: `search_50_first` is the
first search of all (it traces the embedder's program into that cache), the others come after.
Prints one JSON object (seconds: the median of `--repeats`, and each figure's ratio to the bare
start-up):

    python benchmarks/cli_latency.py [--repeats 3] [--learnwares 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from lmdock.common.profile_factory import make_profile
from lmdock.lab.refdata import DATA_DIR
from lmdock.server.app import ServerSettings, create_server
from lmdock.server.auth import AccessPolicy
from lmdock.server.limits import RateLimits
from lmdock.server.market import Market
from rpc import listed_learnwares
from search import spec_rows

CLIENT = [sys.executable, "-m", "lmdock.client.cli"]
MARKET = [sys.executable, "-m", "lmdock.server.cli"]


def _timed(argv: list[str], *, expect: int, env: dict[str, str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        times.append(time.perf_counter() - start)
        if done.returncode != expect:
            raise SystemExit(f"{argv[2:]} exited {done.returncode}, not {expect}: {done.stderr[-2000:]}")
    return round(statistics.median(times), 3)


def _task(folder: Path, n: int) -> Path:
    lines = (DATA_DIR / "medquad.jsonl").read_text().splitlines()[:n]
    path = folder / f"task-{n}.jsonl"
    path.write_text("\n".join(json.dumps({"text": json.loads(line)["text"]}) for line in lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--learnwares", type=int, default=100)
    args = parser.parse_args()
    profile = make_profile()
    with tempfile.TemporaryDirectory(prefix="lmdock-cli-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "LMDOCK_HOME": str(work / "home"), "LMDOCK_MODEL_CACHE": str(work / "models")}
        seeded = Market.open(work / "market", profile=profile)
        rows = spec_rows("clustered", args.learnwares, np.random.default_rng(0))
        seeded.catalogue.add_many(listed_learnwares(profile.profile_id, rows))
        seeded.close()
        market = Market.open(work / "market", profile=profile)
        settings = ServerSettings(rate_limits=RateLimits(calls_per_second=0))
        server, port = create_server(market, access=AccessPolicy.open_demo(), settings=settings)  # no API key
        server.start()
        address = f"127.0.0.1:{port}"
        config = work / "lmdock.toml"
        config.write_text('[daemon]\nstate_dir = "state"\n[market]\naddress = ""\n[api]\nhttp = ""\n')
        holder = subprocess.Popen(
            [*CLIENT, "daemon", "--config", str(config)], stderr=subprocess.PIPE, env=env
        )
        try:
            while not (work / "state" / "daemon.json").exists():
                if holder.poll() is not None:
                    raise SystemExit("the first daemon did not start")
                time.sleep(0.2)
            r = args.repeats
            one = _task(work, 1)
            floor = _timed([sys.executable, "-c", "pass"], expect=0, env=env, repeats=r)
            mistakes = {
                "run_not_cached": _timed(
                    [*CLIENT, "run", "nosuch", "--data", str(one)], expect=6, env=env, repeats=r
                ),
                "pull_unknown": _timed(
                    [*CLIENT, "pull", "nosuch", "--market", address], expect=6, env=env, repeats=r
                ),
                "second_daemon": _timed(
                    [*CLIENT, "daemon", "--config", str(config)], expect=1, env=env, repeats=r
                ),
                "bad_flag": _timed([*CLIENT, "search", "--top-k", "x"], expect=2, env=env, repeats=r),
                "keys_create": _timed(
                    [
                        *MARKET,
                        "keys",
                        "create",
                        "--principal",
                        "p",
                        "--role",
                        "consumer",
                        "--data-dir",
                        str(work / "keys"),
                    ],
                    expect=0,
                    env=env,
                    repeats=r,
                ),
            }
            searches = {}
            first = [*CLIENT, "search", "--market", address, "--data", str(_task(work, 50)), "--epsilon", "1"]
            searches["search_50_first"] = _timed(
                first, expect=0, env={**env, "LMDOCK_HOME": str(work / "home-first")}, repeats=1
            )
            for n in (50, 300):
                task = _task(work, n)
                argv = [*CLIENT, "search", "--market", address, "--data", str(task), "--epsilon", "1"]
                runs = []
                for i in range(r):  # a fresh ledger each time: a real release, not a cached re-send
                    home = {**env, "LMDOCK_HOME": str(work / f"home-{n}-{i}")}
                    runs.append(_timed(argv, expect=0, env=home, repeats=1))
                searches[f"search_{n}"] = round(statistics.median(runs), 3)
        finally:
            holder.terminate()
            holder.wait(timeout=60)
            server.stop(grace=None)
            market.close()
    figures = {**mistakes, **searches}
    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_1m": os.getloadavg()[0],
                },
                "repeats": args.repeats,
                "learnwares": args.learnwares,
                "python_c_pass_s": floor,
                "seconds": figures,
                "ratio_to_python_c_pass": {k: round(v / floor, 1) for k, v in figures.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
