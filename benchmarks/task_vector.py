"""What a client pays for each spec kind: a DP task vector against a DP kernel mean, same texts.

For each n, the client's whole release in this process as a fresh search would make it, timed
from the texts to the spec: the kernel mean (load MiniLM, embed, calibrate, release: `private_spec`)
and the task vector (load the base model, one DP-SGD step under Opacus with ChaCha20 noise, booked
to a fresh ledger first: `release_task_vector`), at epsilon = 1, delta = 1e-6; the texts are the first n
of the packaged MedQuAD sample. Also the bytes each spec puts on the wire (float32 values). Prints
one JSON object; the issue's budget is a task vector at n = 100 in at most 3 minutes on this box.

    python benchmarks/task_vector.py [--sizes 50,100,300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from lmdock.client.ledger import Ledger
from lmdock.client.privacy_unit import DataSet
from lmdock.client.spec_release import private_spec
from lmdock.client.training.task_vector import release_task_vector, task_vector_profile
from lmdock.common.base_model_files import SMOLLM2
from lmdock.common.profile_factory import make_profile
from lmdock.lab.refdata import DATA_DIR


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="50,100,300")
    args = parser.parse_args()
    lines = (DATA_DIR / "medquad.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    km_profile, tv_profile = make_profile(), task_vector_profile(SMOLLM2)
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        if n > len(texts):
            raise SystemExit(f"the sample has {len(texts)} texts, fewer than {n}")
        chosen = texts[:n]
        start = time.perf_counter()
        private_spec(chosen, km_profile, epsilon=1.0, delta=1e-6)
        km_seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            ledger = Ledger(Path(tmp) / "ledger.jsonl")
            start = time.perf_counter()
            spec, _ = release_task_vector(
                chosen, tv_profile, ledger=ledger, dataset=DataSet.of(chosen), epsilon=1.0, delta=1e-6
            )
            tv_seconds = time.perf_counter() - start
        rows.append(
            {
                "n": n,
                "kernel_mean_s": round(km_seconds, 2),
                "task_vector_s": round(tv_seconds, 2),
                "ratio": round(tv_seconds / km_seconds, 1),
                "task_vector_sigma": spec.privacy.sigma,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "load_1m": round(load, 2)},
                "task_vector_profile": tv_profile.profile_id,
                "wire_bytes": {"kernel_mean": 4 * km_profile.feature_dim, "task_vector": 4 * tv_profile.dim},
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
