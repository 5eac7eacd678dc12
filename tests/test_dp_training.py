"""DP-SGD adapter training with Opacus: the regression for Opacus + PEFT, and the DP settings' checks."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
from lmdock.client.prompts import answer_ids, prompt_ids
from lmdock.client.publish.training import TrainingConfig, train_adapter
from lmdock.client.runtime import load_learnware
from lmdock.client.training.dp_sgd import DPConfig
from lmdock.client.training.objectives import TaskModel, load_task_model
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import TaskInfo
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

POSITIVE = ("good", "great", "fine", "nice", "happy")
NEGATIVE = ("bad", "awful", "poor", "sad", "ugly")
GENERATION = TaskInfo(kind="generation")


def toy_task(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Three sentiment words -> "positive" / "negative": learnable by a tiny model in a few steps."""
    rng = random.Random(seed)
    texts, answers = [], []
    for i in range(n):
        words = POSITIVE if i % 2 else NEGATIVE
        texts.append(" ".join(rng.choice(words) for _ in range(3)))
        answers.append("positive" if i % 2 else "negative")
    return texts, answers


@torch.no_grad()
def answer_loss(adapter: Path, base: Path, texts: list[str], answers: list[str]) -> tuple[float, float]:
    """Mean per-example cross-entropy of the answer tokens: (with the adapter, base model alone)."""
    loaded = load_learnware(adapter, base_model=str(base), task=GENERATION, device="cpu")
    scorer = TaskModel(
        task=GENERATION,
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        max_tokens=16,
        eos_id=loaded.model.config.eos_token_id,
    )
    tuned = float(scorer.loss(texts, answers))
    with loaded.model.disable_adapter():
        base_loss = float(scorer.loss(texts, answers))
    return tuned, base_loss


@pytest.mark.slow
def test_dp_training_changes_the_adapter_improves_the_task_and_reports_epsilon(
    tiny_llama: Path, tmp_path: Path
) -> None:
    texts, answers = toy_task(256, seed=1)
    config = TrainingConfig(epochs=4, learning_rate=2e-2, batch_size=32, max_tokens=16, rank=8)
    dp = DPConfig(epsilon=8.0, delta=1e-6)
    report = train_adapter(
        base_model=str(tiny_llama),
        task=GENERATION,
        texts=texts,
        targets=answers,
        out_dir=tmp_path / "adapter",
        config=config,
        dp=dp,
    )
    # epsilon is what the accountant spent: at most the target, and not far below it
    assert report.dp is not None
    assert 0.9 * dp.epsilon <= report.dp.epsilon <= dp.epsilon * 1.01
    assert report.dp.steps == config.epochs * 8 and report.dp.sample_rate == pytest.approx(1 / 8)
    assert report.dp.noise_multiplier > 0.3
    training = report.to_manifest()
    assert training["dp"] is True and training["epsilon"] == report.dp.epsilon and training["delta"] == 1e-6

    # every LoRA matrix moved away from its initial value (B starts at zero), none is corrupted
    torch.manual_seed(config.seed)
    initial = get_peft_model_state_dict(
        load_task_model(
            tiny_llama, GENERATION, base_model=str(tiny_llama), max_tokens=16, rank=8, alpha=16, dropout=0.05
        ).model
    )
    trained = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert set(trained) == set(initial) and len(trained) == 8
    for name, tensor in trained.items():
        assert bool(torch.isfinite(tensor).all()), name
        assert float((tensor - initial[name]).abs().max()) > 1e-3, f"{name} did not change"

    # and the model got better at the task on records it never saw
    held_texts, held_answers = toy_task(64, seed=2)
    tuned, base = answer_loss(tmp_path / "adapter", tiny_llama, held_texts, held_answers)
    assert math.isfinite(tuned) and tuned < base - 0.1, (tuned, base)


def test_dp_settings_are_validated() -> None:
    for bad in (
        {"epsilon": 0.0, "delta": 1e-6},
        {"epsilon": -1.0, "delta": 1e-6},
        {"epsilon": math.inf, "delta": 1e-6},
        {"epsilon": math.nan, "delta": 1e-6},
        {"epsilon": 1000.0, "delta": 1e-6},
        {"epsilon": 1.0, "delta": 0.0},
        {"epsilon": 1.0, "delta": 1.0},
        {"epsilon": 1.0, "delta": 1e-6, "max_grad_norm": 0.0},
    ):
        with pytest.raises(InvalidArgument):
            DPConfig(**bad)
    with pytest.raises(TypeError):
        DPConfig(1.0, 1e-6)  # type: ignore[misc]  # privacy parameters are keyword-only


def test_delta_follows_the_policy_of_every_release(tiny_llama: Path, tmp_path: Path) -> None:
    """delta <= min(1e-6, 1/(10 n)): 1e-5 fits below 1/n for 100 records, and is still refused."""
    texts, answers = toy_task(100, seed=1)
    with pytest.raises(InvalidArgument, match=r"1/\(10 n\)\) = 1e-06"):
        train_adapter(
            base_model=str(tiny_llama),
            task=GENERATION,
            texts=texts,
            targets=answers,
            out_dir=tmp_path / "adapter",
            dp=DPConfig(epsilon=1.0, delta=1e-5),
        )
    assert not (tmp_path / "adapter").exists()


def test_the_answer_loss_reads_the_vocabulary_only_at_answer_tokens(tiny_llama: Path) -> None:
    """The loss projects onto the vocabulary only where an answer token is predicted; it equals
    the mean over examples of each one's mean cross-entropy over its answer tokens, computed
    here from the full logits of every position."""
    torch.manual_seed(0)
    tm = load_task_model(
        tiny_llama, GENERATION, base_model=str(tiny_llama), max_tokens=16, rank=4, alpha=8, dropout=0.0
    )
    texts, answers = ["good good", "bad awful poor sad", "fine"], ["positive", "negative", "a long answer"]
    per_example = []
    for text, answer in zip(texts, answers, strict=True):
        prompt = prompt_ids(tm.tokenizer, text, max_tokens=16)
        answer_tokens = [*answer_ids(tm.tokenizer, answer), tm.eos_id]
        logits = tm.model(input_ids=torch.tensor([prompt + answer_tokens])).logits[0]
        predicted = logits[len(prompt) - 1 : -1]  # the positions that predict the answer's tokens
        per_example.append(torch.nn.functional.cross_entropy(predicted, torch.tensor(answer_tokens)))
    expected = torch.stack(per_example).mean()
    assert float(tm.loss(texts, answers).detach()) == pytest.approx(float(expected), rel=1e-5)


def test_a_model_whose_logits_are_capped_after_its_head_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    capped = tmp_path / "capped"
    shutil.copytree(tiny_llama, capped)
    config = json.loads((capped / "config.json").read_text())
    (capped / "config.json").write_text(json.dumps({**config, "final_logit_softcapping": 30.0}))
    with pytest.raises(InvalidArgument, match="scaled or capped after the output layer"):
        load_task_model(capped, GENERATION, base_model="capped", max_tokens=16, rank=4, alpha=8, dropout=0.0)


def test_a_top_layer_adapter_reuses_the_lower_activations_with_the_same_loss_and_gradients(
    tiny_llama: Path,
) -> None:
    torch.manual_seed(0)
    tm = load_task_model(
        tiny_llama,
        GENERATION,
        base_model=str(tiny_llama),
        max_tokens=16,
        rank=4,
        alpha=8,
        dropout=0.0,
        layers=1,
    )
    assert tm.split is not None and tm.split.split == 1
    plain = dataclasses.replace(tm, split=None)  # the same model, every layer run every time
    calls = []
    tm.model.get_decoder().layers[0].register_forward_hook(lambda *_: calls.append(1))
    texts, answers = toy_task(6, seed=3)

    def loss_and_grads(model: TaskModel) -> tuple[float, list[torch.Tensor]]:
        tm.model.zero_grad()
        loss = model.loss(texts, answers)
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in tm.model.parameters() if p.requires_grad]

    expected, expected_grads = loss_and_grads(plain)
    calls.clear()
    for _ in range(2):  # the first call fills the cache, the second reads it
        got, grads = loss_and_grads(tm)
        assert got == pytest.approx(expected, rel=1e-5)
        for g, e in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7)
    assert len(calls) == 1  # the lower layer ran once, for the first call's batch
    assert tm.lower_cache.used > 0


def test_dp_training_on_a_top_layer_adapter_runs_from_the_cached_lower_layers(
    tiny_llama: Path, tmp_path: Path
) -> None:
    texts, answers = toy_task(64, seed=2)
    config = TrainingConfig(epochs=2, learning_rate=2e-2, batch_size=16, max_tokens=16, rank=4, layers=1)
    report = train_adapter(
        base_model=str(tiny_llama),
        task=GENERATION,
        texts=texts,
        targets=answers,
        out_dir=tmp_path / "adapter",
        config=config,
        dp=DPConfig(epsilon=8.0, delta=1e-6),
    )
    assert report.dp is not None and report.dp.steps == 8
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert weights and all(".layers.1." in name for name in weights)  # the top layer alone
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
