"""The daemon's HTTP API through the official `openai` client: what strangers' code sends and reads.

One daemon (uvicorn on port 0, a real market, the tiny BERT classifier and Llama generator);
tiny Llama has 256 positions and the config allows 1000 new tokens, so the model's own limit
is the one that refuses a large `max_tokens`. Batches hold two texts and wait up to 0.5 s for
the second, so two requests sent together decode in one batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
from lmdock.client.answers import GenerationOptions
from lmdock.client.daemon.core import Daemon
from lmdock.client.daemon.types import ChatMessage
from lmdock.lab.embedded import embedded_market

from tests.daemon_support import (
    PINNED_TASKS,
    WRITER,
    http,
    packages,
    publish,
    running,
    token_of,
    wait_ready,
    write_config,
)

__all__ = ["packages"]  # the fixture, imported for pytest

LONG = 200  # new tokens of a streamed answer: the random tiny Llama never ends on its own
CHAT = [{"role": "user", "content": "Summarise: stocks rallied on Friday"}]


@pytest.fixture(scope="module")
def daemon(packages: list[Path], tmp_path_factory: pytest.TempPathFactory, profile: Any) -> Iterator[Daemon]:
    folder = tmp_path_factory.mktemp("daemon-openai")
    with embedded_market(folder / "market", profile=profile) as (address, _):
        publish(address, packages)
        config = write_config(
            folder,
            market=address,
            max_new_tokens=1000,
            runtime_extra="max_batch_size = 2",
            batch_wait_ms=500,
            extra=PINNED_TASKS,
        )
        with running(config) as served:
            wait_ready(served)
            yield served


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"http://{daemon.http_address}/v1", api_key=token_of(daemon), max_retries=0
    ) as api:
        yield api


def _batches_run(daemon: Daemon) -> int:
    (llama,) = [base for base in daemon.pool.describe() if base.kind == "generation"]
    return llama.batches_run


def test_chat_streams_tokens_while_they_are_generated(client: openai.OpenAI, daemon: Daemon) -> None:
    whole = client.chat.completions.create(model="notes", messages=CHAT, max_tokens=LONG)  # type: ignore[arg-type]
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason == "length" and whole.usage is not None
    assert whole.usage.completion_tokens == LONG

    before = _batches_run(daemon)
    stream = client.chat.completions.create(
        model="notes",
        messages=CHAT,  # type: ignore[arg-type]
        max_tokens=LONG,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, running_at_first_text = [], None
    for chunk in stream:
        if running_at_first_text is None and chunk.choices and chunk.choices[0].delta.content:
            running_at_first_text = _batches_run(daemon) == before  # its batch has not ended yet
        chunks.append(chunk)
    assert running_at_first_text, "the first text came only once generation was over"
    assert _batches_run(daemon) == before + 1  # counted before the last answer is handed over
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 1 and "".join(texts) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # include_usage's last chunk
    assert all(c.usage is None for c in chunks[:-1])


class Leaves:
    """A reader that goes after two pieces of text."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def __call__(self, index: int, delta: str) -> None:
        self.pieces.append(delta)

    @property
    def listening(self) -> bool:
        return len(self.pieces) < 2


def test_a_caller_that_leaves_mid_stream_stops_its_rows(client: openai.OpenAI, daemon: Daemon) -> None:
    reader = Leaves()
    left = daemon.chat("notes", [ChatMessage("user", "hi")], GenerationOptions(max_new_tokens=LONG), reader)
    assert len(reader.pieces) == 2 and left.completion_tokens < LONG
    assert left.choices[0].text == "".join(reader.pieces)  # type: ignore[union-attr]

    stream = client.chat.completions.create(model="notes", messages=CHAT, max_tokens=LONG, stream=True)  # type: ignore[arg-type]
    next(chunk for chunk in stream if chunk.choices and chunk.choices[0].delta.content)
    stream.close()  # the HTTP caller leaves: the daemon goes on serving the others
    answer = client.chat.completions.create(model="notes", messages=CHAT, max_tokens=2)  # type: ignore[arg-type]
    assert answer.choices[0].finish_reason == "length"


def test_requests_in_one_batch_each_get_their_own_stream(client: openai.OpenAI, daemon: Daemon) -> None:
    prompts = ["Markets fell", "Bonds rose sharply on the news"]
    together = threading.Barrier(len(prompts))

    def stream(prompt: str) -> list[Any]:
        together.wait()
        messages = [{"role": "user", "content": prompt}]
        return list(
            client.chat.completions.create(
                model="notes",
                messages=messages,  # type: ignore[arg-type]
                max_tokens=40,
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    before = _batches_run(daemon)
    with ThreadPoolExecutor(len(prompts)) as pool:
        streams = list(pool.map(stream, prompts))
    assert _batches_run(daemon) == before + 1  # one batch decoded both
    assert len({chunks[0].id for chunks in streams}) == 2
    for chunks in streams:
        texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(texts) > 1 and chunks[-1].usage.completion_tokens == 40
    prompt_tokens = [chunks[-1].usage.prompt_tokens for chunks in streams]
    assert prompt_tokens[0] < prompt_tokens[1]  # each stream's usage is its own request's


def test_completions_stream_each_prompt_as_its_own_choice(client: openai.OpenAI) -> None:
    prompts = ["Markets fell", "Bonds rose sharply"]
    whole = client.completions.create(model="notes", prompt=prompts, max_tokens=12)
    assert [c.index for c in whole.choices] == [0, 1] and whole.object == "text_completion"
    pieces: dict[int, list[str]] = {0: [], 1: []}
    finished = {}
    for chunk in client.completions.create(model="notes", prompt=prompts, max_tokens=12, stream=True):
        assert chunk.object == "text_completion" and chunk.usage is None
        (choice,) = chunk.choices
        pieces[choice.index].append(choice.text)
        if choice.finish_reason:
            finished[choice.index] = choice.finish_reason
    assert ["".join(pieces[i]) for i in (0, 1)] == [c.text for c in whole.choices]
    assert finished == {0: "length", 1: "length"}

    async def streamed_async() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=str(client.base_url), api_key=client.api_key) as api:
            stream = await api.completions.create(
                model="notes",
                prompt=prompts,
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(streamed_async())
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # AsyncOpenAI reads the same

    labels = list(client.completions.create(model="triage", prompt="fever and rash", stream=True))
    assert labels[0].choices[0].text and labels[-1].choices[0].finish_reason == "stop"  # a classifier


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"n": 2}, "n"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
        ({"max_tokens": 300}, "max_tokens"),  # past tiny Llama's 256 positions
        ({"extra_body": {"top_k": 5}}, "top_k"),  # not an OpenAI field
    ],
)
def test_what_the_daemon_cannot_do_is_a_400_naming_the_field(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="notes", messages=CHAT, **fields)  # type: ignore[call-overload]
    assert refused.value.param == param and refused.value.type == "invalid_request_error"


def test_harmless_fields_are_accepted_and_models_name_their_base(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="notes",
        messages=CHAT,  # type: ignore[arg-type]
        max_tokens=2,
        user="ward-7",
        seed=1,
        tool_choice="none",
        response_format={"type": "text"},
        presence_penalty=0,
        logprobs=False,
    )
    assert answer.choices[0].finish_reason == "length"
    unbounded = client.chat.completions.create(model="notes", messages=CHAT)  # type: ignore[arg-type]
    assert unbounded.usage is not None and unbounded.usage.total_tokens == 256  # what fits after the prompt
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="notes", prompt="x", echo=True)
    assert refused.value.param == "echo"
    models = {m.id: m.model_extra or {} for m in client.models.list()}
    assert models["notes"]["root"] == "notes-writer" and models["notes"]["parent"].endswith("tiny-llama0")


def test_vllm_adapter_routes_add_and_remove_a_pinned_task(client: openai.OpenAI, daemon: Daemon) -> None:
    load = {"lora_name": "writer2", "lora_path": WRITER}
    assert http(daemon, "POST", "/v1/load_lora_adapter", load, token=None)[0] == 401
    assert http(daemon, "POST", "/v1/load_lora_adapter", load) == (
        200,
        "Success: LoRA adapter 'writer2' added successfully.",
    )
    assert {m.id: (m.model_extra or {})["root"] for m in client.models.list()}["writer2"] == WRITER
    answer = client.completions.create(model="writer2", prompt="Markets fell", max_tokens=2)
    assert answer.choices[0].finish_reason == "length"
    assert http(daemon, "POST", "/v1/load_lora_adapter", load)[0] == 409  # the task exists
    status, refused = http(daemon, "POST", "/v1/load_lora_adapter", load | {"load_inplace": True})
    assert status == 400 and refused["error"]["param"] == "load_inplace"
    unload = {"lora_name": "writer2"}
    assert http(daemon, "POST", "/v1/unload_lora_adapter", unload)[0] == 200
    assert "writer2" not in {m.id for m in client.models.list()}
    assert http(daemon, "POST", "/v1/unload_lora_adapter", unload)[0] == 404
