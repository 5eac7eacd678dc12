"""The OpenAI-compatible wire format: request bodies in, response bodies out (pure functions).

Follows the OpenAI API's `completions`, `chat/completions` and `models` objects, the
convention local LLM servers share (and vLLM's `root`/`parent` on models). Which request fields
are honoured, ignored or refused is `openai_fields`' table. Differences, all documented in
docs/daemon.md: `temperature` defaults to 0 (greedy, reproducible); `n` must be 1; a
classifier's choices carry `label` and `scores` (softmax probability per label) besides the
label as text, and stream as one chunk; every response carries an `lmdock` object naming the
learnware that answered.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lmdock.client.answers import Classification, Generation, GenerationOptions
from lmdock.client.daemon.openai_fields import (
    CHAT,
    COMPLETIONS,
    LOAD_ADAPTER,
    MESSAGE,
    UNLOAD_ADAPTER,
    check_fields,
)
from lmdock.client.daemon.registry import TaskRecord
from lmdock.client.daemon.types import ChatMessage, Completion
from lmdock.common.errors import InvalidArgument

__all__ = [
    "ChunkStream",
    "Streaming",
    "chat_response",
    "completion_response",
    "error_body",
    "model_object",
    "parse_adapter",
    "parse_chat",
    "parse_completion",
]

MAX_STOP = 4
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the OpenAI API's default for /v1/completions


def _require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgument(
            '"model" is required: the name of a task (GET /v1/models lists them)', param="model"
        )
    return model


def _number(body: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidArgument(f'"{key}" must be a number between {low:g} and {high:g}', param=key)
    return float(value)


def _options(body: Mapping[str, Any], default_max_tokens: int) -> GenerationOptions:
    if body.get("n") not in (None, 1):
        raise InvalidArgument('"n" must be 1: one choice per prompt', param="n")
    # as vLLM: max_completion_tokens (OpenAI's newer name) wins over max_tokens
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    fit = max_tokens is None
    if fit:
        max_tokens = default_max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidArgument(f'"{key}" must be a positive integer', param=key)
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if (
        not isinstance(stop, list | tuple)
        or len(stop) > MAX_STOP
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise InvalidArgument(
            f'"stop" must be a string or a list of at most {MAX_STOP} non-empty strings', param="stop"
        )
    return GenerationOptions(
        max_new_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
        stop=tuple(stop),
        fit=fit,
    )


@dataclass(frozen=True)
class Streaming:
    """How to answer: whole (`on` false), or as server-sent events, with a last usage chunk or not."""

    on: bool = False
    include_usage: bool = False


def _streaming(body: Mapping[str, Any]) -> Streaming:
    stream = body.get("stream") or False  # null is the default, as in OpenAI's API
    if not isinstance(stream, bool):
        raise InvalidArgument('"stream" must be true or false', param="stream")
    options = body.get("stream_options")
    if options is None:
        return Streaming(stream)
    if not stream:  # as the OpenAI API and vLLM answer
        raise InvalidArgument(
            '"stream_options" is only allowed when "stream" is true', param="stream_options"
        )
    if not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}:
        raise InvalidArgument(
            '"stream_options" takes "include_usage" (and "include_obfuscation", ignored)',
            param="stream_options",
        )
    usage = options.get("include_usage", False)
    if not isinstance(usage, bool):
        raise InvalidArgument(
            '"stream_options.include_usage" must be true or false', param="stream_options.include_usage"
        )
    return Streaming(True, usage)


def parse_completion(body: Mapping[str, Any]) -> tuple[str, list[str], GenerationOptions, Streaming]:
    """(model, prompts, options, streaming) from a /v1/completions body."""
    check_fields(body, COMPLETIONS)
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise InvalidArgument(
            '"prompt" must be a non-empty string or a list of them (token arrays are not supported)',
            param="prompt",
        )
    model = _require_model(body)
    return model, prompts, _options(body, COMPLETIONS_DEFAULT_MAX_TOKENS), _streaming(body)


def parse_chat(
    body: Mapping[str, Any], default_max_tokens: int
) -> tuple[str, list[ChatMessage], GenerationOptions, Streaming]:
    """(model, messages, options, streaming) from a /v1/chat/completions body."""
    check_fields(body, CHAT)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidArgument(
            '"messages" must be a non-empty list of {"role", "content"} objects', param="messages"
        )
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidArgument(
                f'messages[{i}] must be an object with a "role" and a "content"', param=f"messages[{i}]"
            )
        check_fields(message, MESSAGE, where=f"messages[{i}]")
        parsed.append(ChatMessage(message["role"], _content(message.get("content"), i)))
    return _require_model(body), parsed, _options(body, default_max_tokens), _streaming(body)


def _content(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    param = f"messages[{i}].content"
    if isinstance(content, list):  # content parts: only text ones
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise InvalidArgument(f"{param}: only text parts are supported", param=param)
            texts.append(part["text"])
        return "\n".join(texts)
    raise InvalidArgument(f"{param} must be a string or a list of text parts", param=param)


def parse_adapter(body: Mapping[str, Any], *, load: bool) -> tuple[str, str]:
    """(task name, learnware id) from vLLM's load_lora_adapter body (unload: the id is "")."""
    check_fields(body, LOAD_ADAPTER if load else UNLOAD_ADAPTER)
    keys = ("lora_name", "lora_path") if load else ("lora_name",)
    for key in keys:
        if not isinstance(body.get(key), str) or not body[key]:
            what = "the task's name" if key == "lora_name" else "the learnware id to serve"
            raise InvalidArgument(f'"{key}" is required: {what}', param=key)
    return body["lora_name"], body.get("lora_path", "") if load else ""


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI API's error object: `type` is the kind of error, `code` a specific one, `param`
    the request field at fault."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def model_object(record: TaskRecord) -> dict[str, Any]:
    return {
        "id": record.name,
        "object": "model",
        "created": int(record.updated_at),
        "owned_by": record.publisher,
        "root": record.learnware_id,  # as vLLM lists a LoRA adapter: its source, then its base
        "parent": record.base_model,
        "lmdock": _extension(record.learnware_id, record.kind) | {"labels": list(record.labels)},
    }


def _extension(learnware_id: str, kind: str) -> dict[str, Any]:
    return {"learnware_id": learnware_id, "kind": kind}


def _usage(result: Completion) -> dict[str, int]:
    total = result.prompt_tokens + result.completion_tokens
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": total,
    }


def _text(choice: Classification | Generation) -> tuple[str, str, dict[str, Any]]:
    """(text, finish_reason, extra fields) of one answer."""
    if isinstance(choice, Classification):
        return choice.label, "stop", {"label": choice.label, "scores": choice.scores}
    return choice.text, choice.finish_reason, {}


def _envelope(prefix: str, kind: str, result: Completion) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{secrets.token_hex(12)}",
        "object": kind,
        "created": int(time.time()),
        "model": result.model,
        "lmdock": _extension(result.learnware_id, result.kind),
    }


def completion_response(result: Completion) -> dict[str, Any]:
    choices = []
    for index, choice in enumerate(result.choices):
        text, finish, extra = _text(choice)
        choices.append({"text": text, "index": index, "logprobs": None, "finish_reason": finish} | extra)
    return _envelope("cmpl", "text_completion", result) | {"choices": choices, "usage": _usage(result)}


def chat_response(result: Completion) -> dict[str, Any]:
    text, finish, extra = _text(result.choices[0])
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
        "finish_reason": finish,
    }
    return _envelope("chatcmpl", "chat.completion", result) | {
        "choices": [choice | extra],
        "usage": _usage(result),
    }


class ChunkStream:
    """The chunks of one streamed answer, in OpenAI's shapes, all with one id.

    Chat: `chat.completion.chunk`s, a first one with the assistant's role, then content deltas,
    then one with the finish reason; completions: `text_completion` chunks with text deltas per
    choice, then each choice's finish reason. With `include_usage`, every chunk has
    `"usage": null` and a last one has no choices and the usage, as OpenAI streams it.
    """

    def __init__(self, *, chat: bool, model: str, record: TaskRecord, include_usage: bool) -> None:
        self.chat = chat
        self.include_usage = include_usage
        self.base: dict[str, Any] = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "lmdock": _extension(record.learnware_id, record.kind),
        } | ({"usage": None} if include_usage else {})

    def start(self) -> list[dict[str, Any]]:
        return [self._chunk(0, {"role": "assistant", "content": ""})] if self.chat else []

    def text(self, index: int, delta: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._chunk(index, {"content": delta} if self.chat else delta, extra=extra)

    def end(self, result: Completion) -> list[dict[str, Any]]:
        """A classifier's labels (with their scores), each choice's finish reason, the usage."""
        chunks = []
        for index, choice in enumerate(result.choices):
            if isinstance(choice, Classification):
                text, _, extra = _text(choice)
                chunks.append(self.text(index, text, extra))
        for index, choice in enumerate(result.choices):
            chunks.append(self._chunk(index, {} if self.chat else "", finish=_text(choice)[1]))
        if self.include_usage:
            chunks.append(self.base | {"choices": [], "usage": _usage(result)})
        return chunks

    def _chunk(
        self,
        index: int,
        delta: dict[str, Any] | str,
        *,
        finish: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        part = {"delta": delta} if isinstance(delta, dict) else {"text": delta}
        choice = {"index": index} | part | {"logprobs": None, "finish_reason": finish} | dict(extra or {})
        return self.base | {"choices": [choice]}
