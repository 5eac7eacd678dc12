"""What a generative learnware reads: the one place where training and inference agree on it.

A base model with a chat template (SmolLM2-Instruct, Qwen2.5-Instruct, ...) was tuned on chats,
so an instruction becomes the user's turn of a chat and the answer the assistant's; the
template writes its own special tokens, so the tokenizer must not add more. A base without
one (a plain LM) reads the instruction as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "answer_ids",
    "answer_text",
    "chat_prompt",
    "has_chat_template",
    "instruction_prompt",
    "prompt_ids",
]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The prompt for a chat: the tokenizer's chat template, or plain "role: content" lines."""
    if has_chat_template(tokenizer):
        return str(tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True))
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def instruction_prompt(tokenizer: Any, instruction: str) -> str:
    """The prompt for one instruction (a task record's text)."""
    if has_chat_template(tokenizer):
        return chat_prompt(tokenizer, [{"role": "user", "content": instruction}])
    return instruction


def answer_text(tokenizer: Any, answer: str) -> str:
    """The answer as it follows its prompt: the assistant's turn, or after a space."""
    return answer if has_chat_template(tokenizer) else " " + answer


def prompt_ids(tokenizer: Any, instruction: str, *, max_tokens: int) -> list[int]:
    """The prompt's token ids as training and scoring read them, cut to `max_tokens` (on the
    tokenizer's truncation side; generative models keep a long prompt's end). A prompt gets
    the tokenizer's special tokens unless a chat template wrote its own."""
    text = instruction_prompt(tokenizer, instruction)
    specials = not has_chat_template(tokenizer)
    return list(
        tokenizer(text, truncation=True, max_length=max_tokens, add_special_tokens=specials)["input_ids"]
    )


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """The answer's token ids as they follow the prompt (no special tokens, no end token)."""
    return list(tokenizer(answer_text(tokenizer, answer), add_special_tokens=False)["input_ids"])
