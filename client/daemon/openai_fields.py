"""Which OpenAI request fields the daemon honours, ignores or refuses: one table per endpoint.

The rule, the same for every field: a field the daemon implements is *supported* (the parser
checks its value); a field whose only effect is on OpenAI's side (who the user is, whether
OpenAI stores the answer, which tier serves it) is *ignored*, and docs/daemon.md says so; a
field that asks for a behaviour the daemon lacks (tools, logprobs, JSON mode, penalties, ...)
is accepted only at the value that asks for nothing (null, false, 0, [], {} or its documented
no-op) and otherwise refused with 400 naming it in `param`, as the OpenAI API refuses what it
does not know. Fields OpenAI does not define are refused too: nothing is silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmdock.common.errors import InvalidArgument

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "IGNORED",
    "LOAD_ADAPTER",
    "MESSAGE",
    "SUPPORTED",
    "UNLOAD_ADAPTER",
    "check_fields",
]

SUPPORTED = "supported"
IGNORED = "ignored"

_OFF: tuple[Any, ...] = (None, False, "", [], {})  # values that ask for nothing (0 and 0.0 equal False)

Policy = str | tuple[Any, ...]  # SUPPORTED, IGNORED, or the values a refused field may take

_SHARED: dict[str, Policy] = {
    "model": SUPPORTED,
    "max_tokens": SUPPORTED,
    "temperature": SUPPORTED,
    "top_p": SUPPORTED,
    "stop": SUPPORTED,
    "n": SUPPORTED,  # 1 only
    "stream": SUPPORTED,
    "stream_options": SUPPORTED,  # include_usage; include_obfuscation is ignored
    "user": IGNORED,
    "seed": IGNORED,  # sampling is not seeded; temperature 0 (the default) is reproducible
    "frequency_penalty": _OFF,
    "presence_penalty": _OFF,
    "logit_bias": _OFF,
}

CHAT: dict[str, Policy] = _SHARED | {
    "messages": SUPPORTED,
    "max_completion_tokens": SUPPORTED,
    "metadata": IGNORED,
    "store": IGNORED,  # nothing is stored either way
    "service_tier": IGNORED,
    "prompt_cache_key": IGNORED,
    "safety_identifier": IGNORED,
    "reasoning_effort": IGNORED,  # for reasoning models; a learnware answers directly
    "verbosity": IGNORED,
    "parallel_tool_calls": IGNORED,  # meaningless without tools, which are refused
    "tools": _OFF,
    "tool_choice": (*_OFF, "none", "auto"),
    "functions": _OFF,
    "function_call": (*_OFF, "none", "auto"),
    "response_format": (*_OFF, {"type": "text"}),
    "logprobs": _OFF,
    "top_logprobs": _OFF,
    "audio": _OFF,
    "modalities": (*_OFF, ["text"]),
    "prediction": _OFF,
    "web_search_options": _OFF,
}

COMPLETIONS: dict[str, Policy] = _SHARED | {
    "prompt": SUPPORTED,
    "best_of": (*_OFF, 1),
    "echo": _OFF,
    "logprobs": (None,),  # 0 still asks for the chosen token's log probability
    "suffix": _OFF,
}

# vLLM's runtime LoRA routes: here a learnware id is the adapter's "path", a task its name
LOAD_ADAPTER: dict[str, Policy] = {"lora_name": SUPPORTED, "lora_path": SUPPORTED, "load_inplace": _OFF}
UNLOAD_ADAPTER: dict[str, Policy] = {"lora_name": SUPPORTED, "lora_int_id": IGNORED}

MESSAGE: dict[str, Policy] = {
    "role": SUPPORTED,
    "content": SUPPORTED,
    "name": IGNORED,
    "tool_calls": _OFF,
    "tool_call_id": _OFF,
    "function_call": _OFF,
    "refusal": _OFF,
    "audio": _OFF,
}


def check_fields(body: Mapping[str, Any], table: Mapping[str, Policy], *, where: str = "") -> None:
    """Refuse a field of `body` that `table` does not know, or a refused one that asks for something."""
    for key, value in body.items():
        param = f"{where}.{key}" if where else key
        policy = table.get(key)
        if policy is None:
            raise InvalidArgument(f"unrecognized request argument supplied: {param}", param=param)
        if isinstance(policy, tuple) and not any(value == off for off in policy):
            raise InvalidArgument(
                f'"{param}" is not supported by this server (docs/daemon.md lists the fields it takes); '
                "leave it out",
                param=param,
            )
