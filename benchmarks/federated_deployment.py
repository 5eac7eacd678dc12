"""lmdock's federated jobs in Flower's deployment runtime: a real SuperLink and one SuperNode per
site on 127.0.0.1, `flwr run` of lmdock's apps, each job timed against the same job in one
process (`lmdock.federated.simulation`, the baseline); prints one JSON object.

    python benchmarks/federated_deployment.py [--job search|build|evaluate|all] [--tls]
        [--node-auth] [--sites 3] [--records 40] [--workdir DIR]

What it runs is what docs/federated.md describes. One deployment serves every job:
`flower-superlink` (every API on one free port of 127.0.0.1), `flower-supernode --superlink
127.0.0.1:P --node-config "site=... data=... ledger=..."` per site, and for each job an app
folder whose pyproject names `lmdock.federated.apps:server` and `:client` (build, evaluate) or
`:search_client` (search) with the job's run config, run by `flwr run APP deploy --stream`
against the connection `deploy` in `$FLWR_HOME/config.toml`.

- `--tls`: a throwaway CA and a certificate for 127.0.0.1 (`tests/certs.py`, in the work
  folder); the SuperLink gets `--ssl-ca-certfile --ssl-certfile --ssl-keyfile`, each SuperNode
  `--root-certificates`, the connection `root-certificates`. Without it: `--insecure`.
- `--node-auth` (implies `--tls`): the SuperLink runs with `--enable-supernode-auth`; each
  site's P-384 key (OpenSSH form) is registered with `flwr supernode register KEY.pub deploy`
  and its SuperNode started with `--auth-supernode-private-key`; a SuperNode with an
  unregistered key is started too and must not come online.

The jobs, over the market started in this process (an embedded SQLite market, its profile):

- build: 2 rounds x 1 local epoch of DP-SGD per site on `sentence-transformers/all-MiniLM-L6-v2`;
  checks every site's ledger booked its run, packages the folder (`federated/package.py`),
  verifies the package and publishes it, with an untrained twin (zero head, same spec).
- search: the joint spec through SecAgg+ and one Search on the market.
- evaluate: the sites' DP counts for the learnwares (the search's top 2 when it ran), re-ranked.
  Without the build job, an in-process build makes the learnwares first (not timed).

FLWR_HOME is the work folder (nothing is written to ~/.flwr),
FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 (no `uv sync` of an unpinned torch),
FLWR_TELEMETRY_ENABLED=0; every process runs in its own session and its group is killed when
the benchmark ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the throwaway CA for --tls is the one the TLS tests use, in tests/certs.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lmdock.client.connection import MarketClient
from lmdock.client.ledger import Ledger
from lmdock.client.publish.package import publish_package, verify_package
from lmdock.common.card import Card
from lmdock.common.embedder_files import DEFAULT_EMBEDDER
from lmdock.common.package import write_package
from lmdock.common.profile import SpecProfile
from lmdock.common.signing import generate_key
from lmdock.common.spec import Spec
from lmdock.federated.build import ADAPTER_FILE, FEDERATION_FILE, build_run_config, initial_adapter
from lmdock.federated.build_site import BuildSettings
from lmdock.federated.evaluate import evaluate_run_config
from lmdock.federated.package import package_federation
from lmdock.federated.search import search_run_config
from lmdock.federated.simulation import federate_build, federate_evaluate, federate_search, sites_from
from lmdock.federated.site import Site
from lmdock.lab.embedded import embedded_market
from safetensors.torch import save_file

from tests.certs import TestCA

WORDS = (("good", "great", "fine", "happy", "nice"), ("bad", "awful", "poor", "sad", "ugly"))
LABELS = ("negative", "positive")
JOBS = ("build", "search", "evaluate")
#: build 4 + its spec 1 + search 1 + evaluation 1, with room: each site's cap in its ledger.
BUDGET_EPSILON = 10.0
SHARES = 2
CLIENT_APPS = {"build": "client", "search": "search_client", "evaluate": "client"}


def _task(path: Path, records: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(records):
        words = WORDS[i % 2]
        text = " ".join(rng.choice(words) for _ in range(3))
        lines.append(json.dumps({"text": text, "label": LABELS[(i + 1) % 2]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's authentication key pair: P-384 in OpenSSH form, as Flower reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return private, public


def _app(folder: Path, clientapp: str, run_config: Mapping[str, str | int | float]) -> Path:
    folder.mkdir(parents=True)
    config = "\n".join(f"{key} = {_toml(value)}" for key, value in run_config.items())
    (folder / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "lmdock{folder.name}"
version = "0.1.0"
description = "lmdock's federated {folder.name}"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "lmdock"

[tool.flwr.app.components]
serverapp = "lmdock.federated.apps:server"
clientapp = "lmdock.federated.apps:{clientapp}"

[tool.flwr.app.config]
{config}
"""
    )
    return folder


@dataclass
class Deployment:
    """A running SuperLink with its SuperNodes; `run` is one `flwr run` of an app on it."""

    work: Path
    env: dict[str, str]
    bin_dir: Path
    startup_seconds: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)

    def flwr(self, *args: str, log: Path, timeout: float = 120) -> None:
        with log.open("ab") as out:
            subprocess.run(
                [str(self.bin_dir / "flwr"), *args],
                env=self.env,
                check=True,
                timeout=timeout,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def online(self) -> int:
        """How many SuperNodes the SuperLink lists as online (`flwr supernode ls`)."""
        listed = subprocess.run(
            [str(self.bin_dir / "flwr"), "supernode", "ls", "deploy", "--format", "json"],
            env=self.env,
            capture_output=True,
            timeout=60,
        )
        try:
            nodes = json.loads(listed.stdout)["nodes"]
        except (json.JSONDecodeError, KeyError):
            return 0
        return sum(1 for n in nodes if n.get("status") == "online")

    def run(self, job: str, run_config: Mapping[str, str | int | float]) -> float:
        app = _app(self.work / "apps" / job, CLIENT_APPS[job], run_config)
        started = time.perf_counter()
        self.flwr("run", str(app), "deploy", "--stream", log=self.work / f"{job}.log", timeout=1200)
        return time.perf_counter() - started


@contextmanager
def deployment(
    work: Path, nodes: Mapping[str, Mapping[str, str | int | float]], *, tls: bool, node_auth: bool
) -> Iterator[Deployment]:
    """Start a SuperLink and one SuperNode per entry of `nodes` (its node config) on 127.0.0.1;
    every process in its own session, whose group is killed on the way out."""
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
    }
    link = [f"--port={port}"]
    node_tls = ["--insecure"]
    connection = "insecure = true"
    if tls or node_auth:
        issued = TestCA(work / "certs", "lmdock-federation-ca")
        cert = issued.issue("superlink", "127.0.0.1", server=True)
        ca = issued.issued.cert
        link += [
            "--ssl-ca-certfile",
            str(ca),
            "--ssl-certfile",
            str(cert.cert),
            "--ssl-keyfile",
            str(cert.key),
        ]
        node_tls = ["--root-certificates", str(ca)]
        connection = f"root-certificates = {_toml(str(ca))}"
    else:
        link.append("--insecure")
    if node_auth:
        link.append("--enable-supernode-auth")
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "127.0.0.1:{port}"\n{connection}\n'
    )
    bench = Deployment(work, env, Path(sys.executable).parent)
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with (work / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
        processes.append(process)
        return process

    started = time.perf_counter()
    try:
        start("superlink", [str(bench.bin_dir / "flower-superlink"), *link])
        _wait_for_port(port, 60)
        for name, node_config in nodes.items():
            command = [
                str(bench.bin_dir / "flower-supernode"),
                *node_tls,
                "--superlink",
                f"127.0.0.1:{port}",
                "--port",
                str(_free_port()),
                "--node-config",
                " ".join(f"{k}={_toml(v)}" for k, v in node_config.items()),
            ]
            if node_auth:
                private, public = _node_key(work / "keys", name)
                bench.flwr("supernode", "register", str(public), "deploy", log=work / "register.log")
                command += ["--auth-supernode-private-key", str(private)]
            start(name, command)
        if node_auth:  # an unregistered key: the SuperLink must turn it away
            private, _ = _node_key(work / "keys", "intruder")
            intruder = start(
                "intruder",
                [
                    str(bench.bin_dir / "flower-supernode"),
                    *node_tls,
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--port",
                    str(_free_port()),
                    "--max-retries",
                    "2",
                    "--auth-supernode-private-key",
                    str(private),
                ],
            )
        deadline = time.monotonic() + 180
        while (online := bench.online()) < len(nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{online} of {len(nodes)} SuperNodes online after 180 s")
            time.sleep(1)
        bench.startup_seconds = time.perf_counter() - started
        if node_auth:
            try:
                code: int | None = intruder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                code = None
            bench.facts["unregistered_supernode"] = {"exit_code": code, "online": bench.online() - len(nodes)}
        yield bench
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):  # the group: its ClientApps too
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class Federation:
    """The same sites twice: for the deployment and for the in-process baseline, own ledgers."""

    names: list[str]
    tasks: list[Path]
    deployed: list[Site]
    simulated: list[Site]

    @classmethod
    def make(cls, work: Path, sites: int, records: int) -> Federation:
        names = [f"site{i}" for i in range(sites)]
        tasks = [_task(work / f"{name}.jsonl", records + 10 * i, seed=i) for i, name in enumerate(names)]

        def of(home: str) -> list[Site]:
            pairs = [f"{n}={t}" for n, t in zip(names, tasks, strict=True)]
            return sites_from(pairs, work / home, budget_epsilon=BUDGET_EPSILON)

        return cls(names, tasks, of("deploy"), of("sim"))

    def node_configs(self) -> dict[str, dict[str, str | int | float]]:
        return {s.name: {**s.node_config(), "honest-sites": SHARES} for s in self.deployed}

    def releases(self, kind: str) -> list[int]:
        """How many releases of `kind` each deployed site's own ledger booked."""
        return [
            sum(1 for e in Ledger(s.ledger_path).state().releases if e.data.get("kind") == kind)
            for s in self.deployed
        ]


def _settings(base: str) -> BuildSettings:
    return BuildSettings(
        federation=uuid.uuid4().hex,
        base_model=base,
        labels=LABELS,
        rounds=2,
        local_epochs=1,
        epsilon=4.0,
        delta=1e-6,
        batch_size=16,
        learning_rate=0.5,
        max_tokens=16,
    )


def _publish(client: MarketClient, build: Path, work: Path, learnware_id: str) -> dict[str, Any]:
    """Package the federated build, verify it, publish it and its untrained twin (zero head)."""
    key = generate_key()
    card = Card(id=learnware_id, name="federated sentiment", domain="reviews", licence="MIT", publisher="net")
    package = work / f"{learnware_id}.tar"
    manifest = package_federation(build, package, card=card, key=key)
    verify_package(package)
    publish_package(client, package)
    summary = json.loads((build / FEDERATION_FILE).read_text())
    settings = BuildSettings.from_config(summary["settings"])
    twin = work / f"{learnware_id}-untrained"
    twin.mkdir()
    save_file(initial_adapter(settings, twin), str(twin / ADAPTER_FILE), metadata={"format": "pt"})
    untrained = f"{learnware_id}-untrained"
    twin_package = work / f"{untrained}.tar"
    write_package(
        twin_package,
        files={name: twin / name for name in ("adapter_config.json", ADAPTER_FILE)},
        key=key,
        card=Card(id=untrained, name="untrained twin", domain="reviews", licence="MIT", publisher="net"),
        base_model=settings.base_model,
        task=settings.task,
        spec=Spec.from_dict(summary["spec"]),
    )
    publish_package(client, twin_package)
    return {
        "id": learnware_id,
        "training_epsilon": manifest.training["epsilon"],
        "sites": [s["site"] for s in manifest.training["federated"]["sites"]],
        "verified": True,
    }


def _timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _jobs(
    fed: Federation, bench: Deployment, work: Path, jobs: Sequence[str], profile: SpecProfile, market: str
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    candidates: list[str] = []
    if "build" in jobs:
        settings, out = _settings(DEFAULT_EMBEDDER), work / "build"
        deployed = bench.run("build", build_run_config(settings, out, profile=profile))
        simulated, _ = _timed(
            lambda: federate_build(
                fed.simulated,
                _settings(DEFAULT_EMBEDDER),
                work / "sim-build",
                profile=profile,
                spec_epsilon=1.0,
                spec_delta=1e-6,
            )
        )
        summary = json.loads((out / FEDERATION_FILE).read_text())
        with MarketClient(market) as client:
            published = _publish(client, out, work, "fed-deployed")
        candidates = ["fed-deployed", "fed-deployed-untrained"]
        report["build"] = {
            "sites": sorted(s["site"] for s in summary["sites"]),
            "refused": summary["refused"],
            "ledger_training_releases_per_site": fed.releases("training"),
            "ledger_spec_releases_per_site": fed.releases("spec"),
            "package": published,
            "deployment_seconds": round(deployed, 1),
            "in_process_seconds": round(simulated, 1),
            "ratio": round(deployed / simulated, 1),
        }
    elif "evaluate" in jobs:  # learnwares to evaluate: an in-process build (not timed)
        setup = sites_from(
            [f"{n}={t}" for n, t in zip(fed.names, fed.tasks, strict=True)],
            work / "setup",
            budget_epsilon=BUDGET_EPSILON,
        )
        out = work / "setup-build"
        federate_build(
            setup, _settings(DEFAULT_EMBEDDER), out, profile=profile, spec_epsilon=1.0, spec_delta=1e-6
        )
        with MarketClient(market) as client:
            _publish(client, out, work, "fed-in-process")
        candidates = ["fed-in-process", "fed-in-process-untrained"]
    if "search" in jobs:
        out = work / "search.json"
        config = search_run_config(
            uuid.uuid4().hex, profile, out, epsilon=1.0, delta=1e-6, shares=SHARES, market=market, top_k=5
        )
        deployed = bench.run("search", config)
        simulated, _ = _timed(
            lambda: federate_search(
                fed.simulated,
                profile,
                work / "sim-search.json",
                epsilon=1.0,
                delta=1e-6,
                shares=SHARES,
                market=market,
                top_k=5,
            )
        )
        summary = json.loads(out.read_text())
        matches = [m["id"] for m in summary.get("matches", [])]
        if matches:
            candidates = matches[:2]
        report["search"] = {
            "contributors": summary["contributors"],
            "records": summary["records"],
            "sigma": summary["spec"]["privacy"]["sigma"],
            "matches": matches,
            "ledger_spec_releases_per_site": fed.releases("spec"),
            "deployment_seconds": round(deployed, 1),
            "in_process_seconds": round(simulated, 1),
            "ratio": round(deployed / simulated, 1),
        }
    if "evaluate" in jobs:
        out = work / "evaluation.json"
        config = evaluate_run_config(uuid.uuid4().hex, market, candidates, out, epsilon=1.0, delta=1e-6)
        deployed = bench.run("evaluate", config)
        simulated, _ = _timed(
            lambda: federate_evaluate(
                fed.simulated, market, candidates, work / "sim-evaluation.json", epsilon=1.0, delta=1e-6
            )
        )
        summary = json.loads(out.read_text())
        report["evaluate"] = {
            "ranking": [
                {"id": r["id"], "spec_rank": r["spec_rank"], "accuracy": round(r["accuracy"], 3)}
                for r in summary["ranking"]
            ],
            "accuracy_sd": round(summary["accuracy_sd"], 3),
            "sites": summary["sites"],
            "ledger_evaluation_releases_per_site": fed.releases("evaluation"),
            "deployment_seconds": round(deployed, 1),
            "in_process_seconds": round(simulated, 1),
            "ratio": round(deployed / simulated, 1),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", choices=[*JOBS, "all"], default="search")
    parser.add_argument("--tls", action="store_true", help="TLS between SuperNodes, SuperLink and flwr")
    parser.add_argument("--node-auth", action="store_true", help="SuperNode authentication (implies --tls)")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--records", type=int, default=40)
    parser.add_argument("--workdir", help="default: a fresh temporary folder (removed afterwards)")
    args = parser.parse_args()
    jobs = JOBS if args.job == "all" else (args.job,)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lmdock-fed-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    fed = Federation.make(work, args.sites, args.records)
    try:
        with (
            embedded_market(work / "market") as (market, running),
            deployment(work, fed.node_configs(), tls=args.tls, node_auth=args.node_auth) as bench,
        ):
            report = _jobs(fed, bench, work, jobs, running.profile, market)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "federated_deployment",
                "jobs": list(jobs),
                "tls": args.tls or args.node_auth,
                "node_auth": args.node_auth,
                **bench.facts,
                "sites": args.sites,
                "startup_seconds": round(bench.startup_seconds, 1),
                **report,
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
