"""Log-likelihood scoring against known values: the split forward equals the full model, the one-pass
next-token read over single-token choices equals per-choice log-likelihoods, and the gold metric is
exp of the mean token log-likelihood."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lmdock.client.publish.training import TrainingConfig
from lmdock.client.training.objectives import load_task_model
from lmdock.common.errors import InvalidArgument
from lmdock.common.package import TaskInfo
from lmdock.lab.gen_scoring import first_adapted_layer
from lmdock.lab.loglik import (
    Question,
    SplitModel,
    batches,
    choice_questions,
    gold_questions,
    read_choices,
    read_gold,
)
from transformers import AutoModelForCausalLM

PROMPTS = [[101, 2023, 2003, 1037], [101, 7592], [101, 2054, 2515, 2009, 2079, 1029]]


def full_logp(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)


@pytest.fixture(scope="module")
def llama(tiny_llama: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval()


@pytest.mark.parametrize("split", [0, 1, 2])
def test_split_forward_reads_what_the_full_model_computes(llama, split: int) -> None:
    questions = [Question(tuple(p), tuple((j, p[j + 1]) for j in range(len(p) - 1))) for p in PROMPTS]
    model = SplitModel(llama, split, pad_id=0)
    got = model.upper(model.lower(questions))  # one right-padded batch of unequal lengths
    for q, answer in zip(questions, got, strict=True):
        logp = full_logp(llama, list(q.ids))
        want = [float(logp[p, t]) for p, t in q.reads]
        np.testing.assert_allclose(answer, want, atol=1e-5)


def test_single_token_choices_take_one_pass_and_equal_per_choice_likelihoods(llama) -> None:
    choices = [[2748], [2053], [2672]]  # three single tokens
    model = SplitModel(llama, 1, pad_id=0)
    one_pass = choice_questions(PROMPTS, choices)
    assert len(one_pass) == len(PROMPTS)  # one forward pass per prompt
    fast = read_choices(model.upper(model.lower(one_pass)), choices)
    per_choice = [Question((*p, *c), ((len(p) - 1, c[0]),)) for p in PROMPTS for c in choices]
    slow = np.array([a.sum() for a in model.upper(model.lower(per_choice))]).reshape(3, 3)
    assert fast.shape == slow.shape == (3, 3)
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    assert (fast.argmax(1) == slow.argmax(1)).all()
    for i, p in enumerate(PROMPTS):
        logp = full_logp(llama, p)
        np.testing.assert_allclose(fast[i], [float(logp[-1, c[0]]) for c in choices], atol=1e-5)


@pytest.mark.parametrize("split", [0, 1, 2])
def test_multi_token_choices_are_packed_after_one_prompt_and_sum_their_tokens(llama, split: int) -> None:
    choices = [[2748, 2053], [2672], [2003, 1037, 7592]]
    questions = choice_questions(PROMPTS, choices)
    assert len(questions) == len(PROMPTS)  # the prompt once, every choice after it
    assert len(questions[0].ids) == len(PROMPTS[0]) + 6
    model = SplitModel(llama, split, pad_id=0)
    scores = read_choices(model.upper(model.lower(questions)), choices)  # one right-padded batch
    assert scores.shape == (3, 3)
    for i, p in enumerate(PROMPTS):
        for j, c in enumerate(choices):  # what one sequence per (prompt, choice) gives
            logp = full_logp(llama, [*p, *c])
            want = sum(float(logp[len(p) - 1 + t, token]) for t, token in enumerate(c))
            assert scores[i, j] == pytest.approx(want, abs=1e-4)


def test_gold_metric_is_exp_of_the_mean_token_log_likelihood(llama) -> None:
    gold = [[2748, 2053, 2672]]
    model = SplitModel(llama, 1, pad_id=0)
    (score,) = read_gold(model.upper(model.lower(gold_questions(PROMPTS[:1], gold))))
    logp = full_logp(llama, [*PROMPTS[0], *gold[0]])
    n = len(PROMPTS[0])
    mean = np.mean([float(logp[n - 1 + j, t]) for j, t in enumerate(gold[0])])
    assert score == pytest.approx(np.exp(mean), rel=1e-5) and 0 < score <= 1


def test_a_top_layer_adapter_leaves_the_lower_activations_shared(tiny_llama: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    tm = load_task_model(
        tiny_llama,
        TaskInfo("generation"),
        base_model="t",
        max_tokens=16,
        rank=4,
        alpha=8,
        dropout=0.0,
        layers=1,
    )
    for name, p in tm.model.named_parameters():
        if "lora_B" in name:
            assert ".layers.1." in name  # only the top layer is adapted
            torch.nn.init.normal_(p, std=0.5)  # a trained-looking adapter
    model = SplitModel(tm.model, 1, pad_id=0)
    questions = [Question(tuple(PROMPTS[2]), ((4, 2079), (5, 1029)))]
    lower = model.lower(questions)  # computed once ...
    with tm.model.disable_adapter():
        base = model.upper(lower)[0]
        want_base = full_logp(tm.model, PROMPTS[2])
    adapted = model.upper(lower)[0]  # ... and read under both
    want = full_logp(tm.model, PROMPTS[2])
    np.testing.assert_allclose(adapted, [float(want[4, 2079]), float(want[5, 1029])], atol=1e-5)
    np.testing.assert_allclose(base, [float(want_base[4, 2079]), float(want_base[5, 1029])], atol=1e-5)
    assert not np.allclose(adapted, base)
    tm.model.save_pretrained(str(tmp_path / "adapter"))
    assert first_adapted_layer(tmp_path / "adapter") == 1  # named module by module, no layer selector


def test_batches_bound_the_padded_tokens() -> None:
    questions = [Question(tuple(range(n)), ()) for n in (5, 5, 9, 2, 2, 2)]
    grouped = list(batches(questions, tokens=18))
    assert [len(b) for b in grouped] == [2, 2, 2]
    assert [q for b in grouped for q in b] == questions


def test_more_top_layers_than_the_model_has_is_refused(tiny_llama: Path) -> None:
    with pytest.raises(InvalidArgument, match="has 2 layers; cannot adapt the top 3"):
        load_task_model(
            tiny_llama,
            TaskInfo("generation"),
            base_model="t",
            max_tokens=8,
            rank=2,
            alpha=4,
            dropout=0.0,
            layers=3,
        )
    with pytest.raises(InvalidArgument, match="0 \\(all\\) or more"):
        TrainingConfig(layers=-1)
