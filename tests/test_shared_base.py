"""Several adapters on one base model in memory, batching, device and dtype choice."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from lmdock.client.daemon.batching import Batcher
from lmdock.client.daemon.config import RuntimeSettings
from lmdock.client.daemon.pool import ModelPool
from lmdock.client.device import pick_device, pick_dtype
from lmdock.client.runtime import GenerationOptions, SharedBase, load_learnware
from lmdock.common.errors import FailedPrecondition, InvalidArgument
from lmdock.common.package import TaskInfo
from lmdock.common.signing import generate_key
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM

from tests.helpers import LABELS, cluster_spec, make_adapter, make_package

GENERATION = TaskInfo("generation")
CLASSIFICATION = TaskInfo("classification", LABELS)
PROMPTS = ["the patient reports", "a much longer prompt about the quarterly results of the bank", "x"]
OPTIONS = GenerationOptions(max_new_tokens=6)


def _trained_looking_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter with random (non-zero) B, so it changes the base model's answers."""
    torch.manual_seed(1)
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("adapters")
    return make_adapter(tiny_llama, out / "plain", kind="generation"), _trained_looking_adapter(
        tiny_llama, out / "lora"
    )


def test_two_adapters_share_one_base_and_answer_as_if_alone(
    tiny_llama: Path, adapters: tuple[Path, Path]
) -> None:
    host = SharedBase(str(tiny_llama), kind="generation", device="cpu")
    base_parameters = sum(p.numel() for p in host._base.parameters())
    host.add("plain", adapters[0], GENERATION)
    host.add("lora", adapters[1], GENERATION)
    lora_parameters = sum(p.numel() for n, p in host._model.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in host._model.parameters()) == base_parameters + lora_parameters
    shared = {name: [g.text for g in host.generate(name, PROMPTS, OPTIONS)] for name in ("plain", "lora")}
    assert shared["plain"] != shared["lora"]
    for name, folder in zip(("plain", "lora"), adapters, strict=True):
        alone = load_learnware(folder, base_model=str(tiny_llama), task=GENERATION, device="cpu")
        assert alone.predict(PROMPTS, max_new_tokens=6) == shared[name]
    # one batch of rows for different adapters answers as each adapter alone
    mixed = [g.text for g in host.generate(["lora", "plain", "lora"], PROMPTS, OPTIONS)]
    assert mixed == [shared["lora"][0], shared["plain"][1], shared["lora"][2]]
    with pytest.raises(InvalidArgument, match="2 adapter names for 3 prompts"):
        host.generate(["lora", "plain"], PROMPTS, OPTIONS)
    # batching (left padding) answers exactly as one prompt at a time
    one_by_one = [host.generate("lora", [p], OPTIONS)[0].text for p in PROMPTS]
    assert one_by_one == shared["lora"]
    first = host.generate("lora", PROMPTS[:1], OPTIONS)[0]
    assert first.completion_tokens <= 6 and first.prompt_tokens == len(
        host.tokenizer(PROMPTS[0], truncation=True, max_length=host.max_input_tokens)["input_ids"]
    )
    assert (
        host.generate("lora", PROMPTS[:1], GenerationOptions(max_new_tokens=6, stop=(first.text[:1],)))[
            0
        ].text
        == ""
    )
    host.remove("plain")
    assert host.names == ["lora"]
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert host.chat_prompt(chat) == "system: be brief\nuser: hi\nassistant:"  # no template: plain lines
    host.tokenizer.chat_template = (  # as instruct checkpoints (Qwen2.5, Llama 3) ship one
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    assert host.chat_prompt(chat) == "<|system|>be brief<|user|>hi<|assistant|>"


def test_classifier_scores_and_grouping(tiny_bert: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_bert, tmp_path / "cls")
    key = SharedBase.key_for(str(tiny_bert), CLASSIFICATION)
    host = SharedBase(str(tiny_bert), kind="classification", num_labels=2, device="cpu")
    host.add("triage", adapter, CLASSIFICATION)
    answers = host.classify("triage", ["chest pain", "a cough that will not stop"])
    for answer in answers:
        assert set(answer.scores) == set(LABELS) and sum(answer.scores.values()) == pytest.approx(1.0)
        assert answer.label == max(answer.scores, key=answer.scores.__getitem__)
    three = TaskInfo("classification", ("a", "b", "c"))
    assert SharedBase.key_for(str(tiny_bert), three) != key  # a 3-label head cannot share this base
    with pytest.raises(InvalidArgument, match="does not fit base"):
        host.add("other", adapter, three)
    with pytest.raises(InvalidArgument, match="does classification, not generation"):
        host.generate("triage", ["x"], OPTIONS)


def test_batcher_merges_concurrent_requests(tiny_llama: Path, adapters: tuple[Path, Path]) -> None:
    host = SharedBase(str(tiny_llama), kind="generation", device="cpu")
    host.add("plain", adapters[0], GENERATION)
    host.add("lora", adapters[1], GENERATION)
    expected = {name: [g.text for g in host.generate(name, PROMPTS, OPTIONS)] for name in ("plain", "lora")}
    batcher = Batcher(host, max_batch=16, wait_s=0.5)
    start = threading.Barrier(6)
    results: dict[tuple[str, int], str] = {}

    def ask(name: str, i: int) -> None:
        start.wait()
        results[(name, i)] = batcher.submit(name, [PROMPTS[i]], OPTIONS).result()[0].text

    threads = [threading.Thread(target=ask, args=(n, i)) for n in ("plain", "lora") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert {k: v for k, v in results.items()} == {(n, i): expected[n][i] for n in expected for i in range(3)}
    assert batcher.batches_run == 1  # both adapters' requests in one batch, not one per request
    failing = Batcher(host, max_batch=4, wait_s=0)
    with pytest.raises(InvalidArgument, match="not loaded"):
        failing.submit("missing", ["x"], OPTIONS).result()
    failing.close()


def test_pool_keeps_at_most_the_configured_bases(
    tiny_llama: Path, tiny_bert: Path, adapters, tmp_path: Path, profile
) -> None:
    runtime = RuntimeSettings(device="cpu", max_loaded_bases=1, batch_wait_ms=0)
    # the generator's manifest names a hub id; the daemon maps it to a checkpoint folder on disk
    pool = ModelPool(runtime, base_models={"acme/tiny-llama": str(tiny_llama)})
    key = generate_key()
    manifests = {}
    for learnware_id, base, folder, kind in (
        ("gen-lw", "acme/tiny-llama", adapters[1], "generation"),
        ("cls-lw", tiny_bert, make_adapter(tiny_bert, tmp_path / "cls"), "classification"),
    ):
        manifests[learnware_id] = make_package(
            tmp_path / f"{learnware_id}.tar",
            folder,
            key=key,
            spec=cluster_spec(profile, 1),
            learnware_id=learnware_id,
            base_model=str(base),
            kind=kind,
        )
        pool.load(learnware_id, folder, manifests[learnware_id])
        if learnware_id == "gen-lw":
            assert [b.base_model for b in pool.describe()] == ["acme/tiny-llama"]
    assert [(b.base_model, b.learnwares) for b in pool.describe()] == [(str(tiny_bert), ("cls-lw",))]
    assert not pool.is_loaded("gen-lw") and pool.is_loaded("cls-lw")
    assert len(pool.batcher("cls-lw").submit("cls-lw", ["a", "b"], None).result()) == 2
    pool.unload("cls-lw")
    assert pool.describe() == []
    pool.close()


def test_device_and_dtype_choice() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(InvalidArgument, match="float16 is not supported on the cpu"):
        pick_dtype("float16", torch.device("cpu"))
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(FailedPrecondition, match="sees no CUDA GPU"):
            pick_device("cuda")
