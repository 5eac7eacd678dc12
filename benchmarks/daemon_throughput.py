"""Throughput of the daemon's OpenAI-compatible API, with and without micro-batching.

A classifier learnware on the offline all-MiniLM-L6-v2 base is published to an embedded
market and served by an in-process daemon on the cpu; C client threads send N requests of one
real medical question each over plain HTTP. Prints one JSON object:

    python benchmarks/daemon_throughput.py [--requests 200] [--clients 8]

The adapter is untrained (its head is random): throughput does not depend on its weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from lmdock.client.connection import MarketClient
from lmdock.client.daemon.app import RunningDaemon
from lmdock.client.daemon.config import DaemonConfig, TaskSettings
from lmdock.client.publish.training import tidy_adapter_folder
from lmdock.client.spec_release import public_spec
from lmdock.common.card import Card
from lmdock.common.embedder_files import DEFAULT_EMBEDDER, embedder_dir
from lmdock.common.package import TaskInfo, write_package
from lmdock.common.signing import generate_key
from lmdock.lab.embedded import embedded_market
from lmdock.lab.refdata import label_set, load_split

LEARNWARE = "bench-medical"


def build_package(folder: Path, profile: Any, texts: list[str], labels: tuple[str, ...]) -> Path:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(
        embedder_dir(DEFAULT_EMBEDDER), num_labels=len(labels)
    )
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=8, target_modules=["query", "value"], modules_to_save=["classifier"]
    )
    model = get_peft_model(base, config)
    model.peft_config["default"].base_model_name_or_path = DEFAULT_EMBEDDER
    adapter = folder / "adapter"
    model.save_pretrained(adapter)
    tidy_adapter_folder(adapter)
    package = folder / "bench.tar"
    write_package(
        package,
        files={name: adapter / name for name in ("adapter_config.json", "adapter_model.safetensors")},
        key=generate_key(),
        card=Card(
            id=LEARNWARE,
            name="Benchmark medical classifier",
            domain="medical",
            licence="MIT",
            publisher="bench",
        ),
        base_model=DEFAULT_EMBEDDER,
        task=TaskInfo("classification", labels),
        spec=public_spec(texts, profile),
    )
    return package


def run(config: DaemonConfig, questions: list[str], *, requests: int, clients: int) -> dict[str, Any]:
    daemon_process = RunningDaemon(config)
    daemon = daemon_process.start()
    try:
        daemon.add_task(TaskSettings(name="triage", learnware=LEARNWARE))
        token = config.token_file.read_text().strip()
        url = f"http://{daemon.http_address}/v1/completions"

        def ask(question: str) -> float:
            body = json.dumps({"model": "triage", "prompt": question}).encode()
            request = urllib.request.Request(url, data=body, method="POST")
            request.add_header("Authorization", f"Bearer {token}")
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
            return time.perf_counter() - started

        ask(questions[0])  # load the model
        latencies: list[float] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            for i in range(k, requests, clients):
                seconds = ask(questions[i % len(questions)])
                with lock:
                    latencies.append(seconds)

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        batches = sum(b.batches_run for b in daemon.status().loaded) - 1  # minus the warm-up
    finally:
        daemon_process.stop()
    latencies.sort()
    return {
        "max_batch_size": config.runtime.max_batch_size,
        "batch_wait_ms": config.runtime.batch_wait_ms,
        "requests_per_s": round(requests / wall, 2),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
        "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
        "batches": batches,
        "mean_batch": round(requests / max(batches, 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    questions, _ = load_split("medquad", "task")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with embedded_market(folder / "market") as (address, market):
            package = build_package(folder, market.profile, questions[:100], label_set("medquad"))
            with MarketClient(address) as client:
                client.upload(package)
            results = []
            for max_batch, wait_ms in ((1, 0.0), (16, 5.0)):
                config = DaemonConfig.from_dict(
                    {
                        "daemon": {"state_dir": str(folder / f"state-{max_batch}")},
                        "market": {"address": address},
                        "cache": {"dir": str(folder / "cache")},
                        "runtime": {"device": "cpu", "max_batch_size": max_batch, "batch_wait_ms": wait_ms},
                        "api": {"http": "127.0.0.1:0", "grpc": "127.0.0.1:0"},
                    }
                )
                results.append(run(config, questions, requests=args.requests, clients=args.clients))
    report = {
        "benchmark": "daemon_throughput",
        "base_model": DEFAULT_EMBEDDER,
        "device": "cpu",
        "requests": args.requests,
        "clients": args.clients,
        "unbatched": results[0],
        "batched": results[1],
        "speedup": round(results[1]["requests_per_s"] / results[0]["requests_per_s"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
