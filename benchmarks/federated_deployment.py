"""A federated search in Flower's deployment runtime: a real SuperLink and one SuperNode per site
on 127.0.0.1, `flwr run` of lmdock's apps; prints one JSON object.

    python benchmarks/federated_deployment.py [--sites 3] [--records 40] [--workdir DIR]

What it runs is what docs/federated.md describes: `flower-superlink --insecure` (every API on
127.0.0.1:8000), `flower-supernode --insecure --superlink 127.0.0.1:8000 --port P --node-config
"site=... data=... ledger=... honest-sites=2"` per site, an app folder whose pyproject names
`lmdock.federated.apps:server` and `:search_client` with the search's run config, and
`flwr run APP deploy --stream` against a connection `deploy` = 127.0.0.1:8000 (insecure) in
`$FLWR_HOME/config.toml`. FLWR_HOME is the work folder (nothing is written to ~/.flwr),
FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 (no `uv sync` of an unpinned torch) and
FLWR_TELEMETRY_ENABLED=0. It checks that every site contributed, that each site's own ledger
booked the release, and reports the wall time against the same search in one process
(`lmdock.federated.simulation`), the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from lmdock.client.ledger import Ledger
from lmdock.common.profile_factory import make_profile
from lmdock.federated.search import search_run_config
from lmdock.federated.simulation import federate_search, sites_from

WORDS = (("good", "great", "fine", "happy", "nice"), ("bad", "awful", "poor", "sad", "ugly"))


def _task(path: Path, records: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(records):
        words = WORDS[i % 2]
        text = " ".join(rng.choice(words) for _ in range(3))
        lines.append(json.dumps({"text": text, "label": "negative" if i % 2 else "positive"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def _toml(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _app(folder: Path, run_config: dict[str, str | int | float]) -> Path:
    folder.mkdir(parents=True)
    config = "\n".join(f"{key} = {_toml(value)}" for key, value in run_config.items())
    (folder / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "lmdocksearch"
version = "0.1.0"
description = "lmdock's federated search"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "lmdock"

[tool.flwr.app.components]
serverapp = "lmdock.federated.apps:server"
clientapp = "lmdock.federated.apps:search_client"

[tool.flwr.app.config]
{config}
"""
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--records", type=int, default=40)
    parser.add_argument("--workdir", help="default: a fresh temporary folder")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lmdock-fed-deploy-"))
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "127.0.0.1:8000"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
    }
    names = [f"site{i}" for i in range(args.sites)]
    tasks = [_task(work / f"{name}.jsonl", args.records + 10 * i, seed=i) for i, name in enumerate(names)]
    profile = make_profile()
    out = work / "search.json"
    run_config = search_run_config(uuid.uuid4().hex, profile, out, epsilon=1.0, delta=1e-6, shares=2)
    app = _app(work / "app", run_config)
    bin_dir = Path(sys.executable).parent
    processes: list[subprocess.Popen[bytes]] = []
    started = time.perf_counter()
    try:
        log = (work / "superlink.log").open("wb")
        processes.append(
            subprocess.Popen([bin_dir / "flower-superlink", "--insecure"], env=env, stdout=log, stderr=log)
        )
        _wait_for_port(8000, 60)
        for i, (name, task) in enumerate(zip(names, tasks, strict=True)):
            node_config = (
                f"site='{name}' data='{task}' ledger='{work / name / 'ledger.jsonl'}' honest-sites=2"
            )
            log = (work / f"{name}.log").open("wb")
            command = [
                bin_dir / "flower-supernode",
                "--insecure",
                "--superlink",
                "127.0.0.1:8000",
                "--port",
                str(9094 + i),
                "--node-config",
                node_config,
            ]
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
            _wait_for_port(9094 + i, 60)
        subprocess.run(
            [bin_dir / "flwr", "run", str(app), "deploy", "--stream"],
            env=env,
            check=True,
            timeout=600,
            stdout=(work / "run.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deployed = time.perf_counter() - started
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    summary = json.loads(out.read_text())
    booked = [len(Ledger(work / name / "ledger.jsonl").state().releases) for name in names]
    sites = sites_from(
        [f"{n}-sim={t}" for n, t in zip(names, tasks, strict=True)], work / "sim", budget_epsilon=3.0
    )
    started = time.perf_counter()
    federate_search(sites, profile, work / "sim.json", epsilon=1.0, delta=1e-6, shares=2, market="", top_k=5)
    simulated = time.perf_counter() - started
    print(
        json.dumps(
            {
                "benchmark": "federated_deployment",
                "sites": args.sites,
                "contributors": summary["contributors"],
                "records": summary["records"],
                "sigma": summary["spec"]["privacy"]["sigma"],
                "ledger_releases_per_site": booked,
                "deployment_seconds": round(deployed, 1),
                "in_process_seconds": round(simulated, 1),
                "ratio": round(deployed / simulated, 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
