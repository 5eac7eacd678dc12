"""Generation speed of the daemon's runtime: the base alone, one adapter, several interleaved.

The packaged SmolLM2-135M-Instruct (or any local causal LM, `--base-model PATH`) is loaded once
as the daemon loads it (`SharedBase`: `--device auto` is cuda, then mps, then the cpu; `--dtype
auto` is bfloat16 on a GPU that has it, float32 on the cpu). K LoRA adapters (r = 8 on q/v, small
random weights: speed does not depend on what an adapter learned) are attached to that one base.
R chat requests of one hospital question each, greedy, `--new-tokens` at most:

- `base`: the base model alone (adapters disabled), the R prompts as one batch;
- `one_adapter`: all R requests to one adapter through the daemon's `Batcher` (one batch);
- `interleaved`: the R requests round-robin over the K adapters through the `Batcher`, which
  runs them as one batch, each row with its own adapter (PEFT's `adapter_names`).

Tokens/s is generated tokens over wall seconds, the best of `--repeats`; each row's ratio is
against `base` in the same run. Prints one JSON object:

    python benchmarks/generation.py [--device cuda] [--adapters 4] [--requests 16] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from lmdock.client.answers import GenerationOptions
from lmdock.client.daemon.batching import Batcher
from lmdock.client.models import quiet_model_libraries, resolve_base_model
from lmdock.client.runtime import SharedBase
from lmdock.common.base_model_files import SMOLLM2
from lmdock.common.package import TaskInfo

QUESTIONS = (
    "What are the early signs of type 2 diabetes, and when should a patient see a doctor?",
    "Explain how high blood pressure damages the kidneys over time.",
    "What should a nurse check before giving a patient a blood thinner?",
    "Describe the usual treatment for a child with a mild asthma attack.",
    "How is pneumonia told apart from a common cold?",
    "What does a high white blood cell count usually mean?",
    "Why do doctors ask patients to fast before a cholesterol test?",
    "List the warning signs of a stroke and what to do first.",
)


def make_adapters(folder: Path, base: Path, count: int) -> list[Path]:
    """`count` LoRA adapters (r = 8 on q/v) with small random weights, in PEFT format."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(model, config)
    out = []
    for i in range(count):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:  # PEFT starts B at zero; a trained one is small, not zero
                    parameter.normal_(0.0, 0.01)
        out.append(folder / f"adapter{i}")
        peft_model.save_pretrained(out[-1])
    return out


def timed(work: Any, repeats: int) -> tuple[float, int]:
    """The best wall time of `repeats` runs of `work()` and the tokens that run generated."""
    best = (float("inf"), 0)
    for _ in range(repeats):
        started = time.perf_counter()
        tokens = work()
        best = min(best, (time.perf_counter() - started, tokens))
    return best


def base_alone(host: SharedBase, prompts: list[str], new_tokens: int) -> int:
    batch = host.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False).to(
        host.device
    )
    with host.selected(None) as model, torch.inference_mode():
        out = model.generate(
            **batch,
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=host.tokenizer.pad_token_id,
        )
    generated = out[:, batch["input_ids"].shape[1] :]
    return int((generated != host.tokenizer.pad_token_id).sum())


def through_batcher(batcher: Batcher, names: list[str], prompts: list[str], new_tokens: int) -> int:
    options = GenerationOptions(max_new_tokens=new_tokens)
    futures: list[Future[list[Any]]] = [
        batcher.submit(names[i % len(names)], [prompt], options) for i, prompt in enumerate(prompts)
    ]
    return sum(answer.completion_tokens for future in futures for answer in future.result())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-model", default=SMOLLM2, help="a packaged base or a local causal-LM folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch cpu threads (0: torch's default)")
    args = parser.parse_args()
    quiet_model_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = resolve_base_model(args.base_model)
    started = time.perf_counter()
    host = SharedBase(args.base_model, kind="generation", device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - started
    generation = TaskInfo("generation")
    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for i, folder in enumerate(make_adapters(Path(tmp), base, args.adapters)):
            names.append(f"adapter-{i}")
            host.add(names[-1], folder, generation)
    prompts = [
        host.chat_prompt([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
        for i in range(args.requests)
    ]
    batcher = Batcher(host, max_batch=args.requests, wait_s=0.05)
    try:
        through_batcher(batcher, names, prompts[:2], 2)  # warm-up: first-call allocations
        runs = {
            "base": lambda: base_alone(host, prompts, args.new_tokens),
            "one_adapter": lambda: through_batcher(batcher, names[:1], prompts, args.new_tokens),
            "interleaved": lambda: through_batcher(batcher, names, prompts, args.new_tokens),
        }
        rows = {}
        for row, work in runs.items():
            seconds, tokens = timed(work, args.repeats)
            rows[row] = {
                "seconds": round(seconds, 3),
                "tokens": tokens,
                "tokens_per_s": round(tokens / seconds, 1),
            }
    finally:
        batcher.close()
    for row in rows.values():
        row["ratio_to_base"] = round(row["tokens_per_s"] / rows["base"]["tokens_per_s"], 3)
    rows["interleaved"]["adapters"] = args.adapters
    if host.device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "base_model": args.base_model,
                "device": str(host.device),
                "gpu": torch.cuda.get_device_name() if host.device.type == "cuda" else None,
                "dtype": str(host.dtype).removeprefix("torch."),
                "torch_threads": torch.get_num_threads(),
                "requests": args.requests,
                "new_tokens": args.new_tokens,
                "load_s": round(load_s, 2),
                "peak_memory_mb": round(peak_mb),
                "rows": rows,
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
