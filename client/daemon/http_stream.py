"""A streamed answer: text from the inference thread, server-sent events to the caller.

The batcher's worker hands each piece of text to `Deltas`, which queues it on the event loop
without ever blocking that thread; the response reads the queue and writes one event per piece
(`data: {chunk}`, then `data: [DONE]`), so every request in a batch has its own stream. When
the caller leaves mid-stream, its rows stop decoding; the rest of the batch goes on.

The response starts with the first piece of text (or with the answer, when there is none, as a
classifier's): a request refused before that — an unknown model, a `max_tokens` over the
model's limit — still gets its own status and error object. A typed error after it arrives as
an OpenAI error event (`data: {"error": ...}`) before `[DONE]`, as vLLM sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from lmdock.client.daemon.http_errors import typed_error_body
from lmdock.client.daemon.openai_schema import ChunkStream
from lmdock.client.daemon.types import Completion
from lmdock.common.errors import LmdockError
from starlette.responses import Response, StreamingResponse

__all__ = ["Deltas", "stream_answer"]

HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class Deltas:
    """(choice index, text) pieces, pushed from any thread, read on the event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.listening = True  # false once the response has ended: the request's rows stop decoding

    def __call__(self, index: int, delta: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            self._loop.call_soon_threadsafe(self.queue.put_nowait, (index, delta))

    async def next(self, answer: asyncio.Future[Completion]) -> tuple[int, str] | None:
        """The next piece, or None once `answer` is done and every piece has been read."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        waiting: asyncio.Future[Any] = asyncio.ensure_future(self.queue.get())
        await asyncio.wait({waiting, answer}, return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            return waiting.result()
        waiting.cancel()  # the answer came first; pieces it pushed before are queued already
        return self.queue.get_nowait() if not self.queue.empty() else None


async def stream_answer(run: Callable[[Deltas], Awaitable[Completion]], chunks: ChunkStream) -> Response:
    """Start `run` (given where its text goes) and answer with its events once it has said something."""
    deltas = Deltas()
    answer = asyncio.ensure_future(run(deltas))
    answer.add_done_callback(_retrieve)
    first = await deltas.next(answer)
    if first is None:
        answer.result()  # a refusal: raised here, before any byte of the response is sent
    return StreamingResponse(_events(first, deltas, answer, chunks), headers=HEADERS)


async def _events(
    first: tuple[int, str] | None,
    deltas: Deltas,
    answer: asyncio.Future[Completion],
    chunks: ChunkStream,
) -> AsyncIterator[str]:
    try:
        for chunk in chunks.start():
            yield _event(chunk)
        piece = first
        while piece is not None:
            yield _event(chunks.text(*piece))
            piece = await deltas.next(answer)
        try:
            ended = chunks.end(await answer)
        except LmdockError as exc:
            ended = [typed_error_body(exc)]
        for chunk in ended:
            yield _event(chunk)
        yield "data: [DONE]\n\n"
    finally:  # the answer was sent, or the caller left (the response is cancelled)
        deltas.listening = False


def _event(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


def _retrieve(answer: asyncio.Future[Completion]) -> None:
    """Mark the outcome read, for when the caller left before it came (no 'never retrieved')."""
    if not answer.cancelled():
        answer.exception()
