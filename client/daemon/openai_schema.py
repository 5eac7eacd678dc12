"""The OpenAI-compatible wire format: request bodies in, response bodies out (pure functions).

Follows the OpenAI API's `completions`, `chat/completions` and `models` objects, the
convention local LLM servers share. Differences, all documented in docs/daemon.md:
`temperature` defaults to 0 (greedy, reproducible); `n` must be 1; a streamed answer arrives
as one chunk once complete; a classifier's choices carry `label` and `scores` (softmax
probability per label) besides the label as text; every response carries an `lmdock` object
naming the learnware that answered.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from lmdock.client.answers import Classification, Generation, GenerationOptions
from lmdock.client.daemon.registry import TaskRecord
from lmdock.client.daemon.types import ChatMessage, Completion
from lmdock.common.errors import InvalidArgument

__all__ = [
    "chat_chunks",
    "chat_response",
    "completion_chunks",
    "completion_response",
    "error_body",
    "model_object",
    "parse_chat",
    "parse_completion",
]

MAX_STOP = 4
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the OpenAI API's default for /v1/completions


def _require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgument('"model" is required: the name of a task (GET /v1/models lists them)')
    return model


def _number(body: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidArgument(f'"{key}" must be a number between {low:g} and {high:g}')
    return float(value)


def _options(body: Mapping[str, Any], default_max_tokens: int) -> GenerationOptions:
    if body.get("n", 1) != 1:
        raise InvalidArgument('"n" must be 1: one choice per prompt')
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidArgument('"max_tokens" must be a positive integer')
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if (
        not isinstance(stop, list | tuple)
        or len(stop) > MAX_STOP
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise InvalidArgument(f'"stop" must be a string or a list of at most {MAX_STOP} non-empty strings')
    return GenerationOptions(
        max_new_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
        stop=tuple(stop),
    )


def _stream(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidArgument('"stream" must be true or false')
    return stream


def parse_completion(body: Mapping[str, Any]) -> tuple[str, list[str], GenerationOptions, bool]:
    """(model, prompts, options, stream) from a /v1/completions body."""
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise InvalidArgument(
            '"prompt" must be a non-empty string or a list of them (token arrays are not supported)'
        )
    return _require_model(body), prompts, _options(body, COMPLETIONS_DEFAULT_MAX_TOKENS), _stream(body)


def parse_chat(
    body: Mapping[str, Any], default_max_tokens: int
) -> tuple[str, list[ChatMessage], GenerationOptions, bool]:
    """(model, messages, options, stream) from a /v1/chat/completions body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidArgument('"messages" must be a non-empty list of {"role", "content"} objects')
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidArgument(f'messages[{i}] must be an object with a "role" and a "content"')
        parsed.append(ChatMessage(message["role"], _content(message.get("content"), i)))
    return _require_model(body), parsed, _options(body, default_max_tokens), _stream(body)


def _content(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text ones
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise InvalidArgument(f"messages[{i}].content: only text parts are supported")
            texts.append(part["text"])
        return "\n".join(texts)
    raise InvalidArgument(f"messages[{i}].content must be a string or a list of text parts")


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """The OpenAI API's error object: `type` is the kind of error, `code` a specific one."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def model_object(record: TaskRecord) -> dict[str, Any]:
    return {
        "id": record.name,
        "object": "model",
        "created": int(record.updated_at),
        "owned_by": record.publisher,
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


def completion_chunks(result: Completion) -> list[dict[str, Any]]:
    """Server-sent events of a streamed completion: the whole answer in one chunk."""
    return [completion_response(result) | {"usage": None}]


def chat_chunks(result: Completion) -> list[dict[str, Any]]:
    """Server-sent events of a streamed chat: role and content, then the finish reason."""
    envelope = _envelope("chatcmpl", "chat.completion.chunk", result)
    text, finish, extra = _text(result.choices[0])
    delta = {
        "index": 0,
        "delta": {"role": "assistant", "content": text},
        "logprobs": None,
        "finish_reason": None,
    }
    end = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}
    return [envelope | {"choices": [delta | extra]}, envelope | {"choices": [end]}]
