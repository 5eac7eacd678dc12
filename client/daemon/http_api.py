"""The OpenAI-compatible HTTP API: a Starlette app over `Daemon`, behind `Guard`.

Besides OpenAI's routes, vLLM's runtime adapter routes (`/v1/load_lora_adapter`,
`/v1/unload_lora_adapter`) add and remove a task serving a pinned learnware — what the local
gRPC API's AddTask and RemoveTask do with the same token, and no privacy spent.

Handlers run on the event loop only to read and answer; the daemon's operations (registry
reads, inference) run on worker threads under one bounded limiter, so a slow answer never holds
up another request. Bodies are JSON objects of at most api.max_request_bytes, read within
`READ_TIMEOUT_S`; answers are JSON, or server-sent events, sent as the text is generated, when
`stream` is true (`http_stream`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from lmdock.client.daemon import openai_schema as schema
from lmdock.client.daemon.config import TaskSettings
from lmdock.client.daemon.core import Daemon
from lmdock.client.daemon.http_cors import CorsPolicy
from lmdock.client.daemon.http_errors import error_response, typed_error_response
from lmdock.client.daemon.http_guard import INTERNAL, Guard
from lmdock.client.daemon.http_stream import Deltas, stream_answer
from lmdock.client.daemon.json_body import parse_json_object
from lmdock.client.daemon.types import Completion
from lmdock.common.errors import LmdockError, NotFound
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

__all__ = ["create_app"]

READ_TIMEOUT_S = 60
ROUTES = (
    "GET /v1/models, POST /v1/completions, POST /v1/chat/completions, "
    "POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter"
)
T = TypeVar("T")


def create_app(daemon: Daemon, *, token: str) -> ASGIApp:
    api = _Api(daemon)
    app = Starlette(
        routes=[
            Route("/v1/models", api.models, methods=["GET"]),
            Route("/v1/models/{name:path}", api.model, methods=["GET"]),
            Route("/v1/completions", api.completions, methods=["POST"]),
            Route("/v1/chat/completions", api.chat, methods=["POST"]),
            Route("/v1/load_lora_adapter", api.load_adapter, methods=["POST"]),
            Route("/v1/unload_lora_adapter", api.unload_adapter, methods=["POST"]),
        ],
        exception_handlers={
            LmdockError: api.typed_error,
            HTTPException: api.http_error,
            Exception: _internal_error,  # answered here; `Guard` writes the one log line
        },
    )
    api_settings = daemon.config.api
    return Guard(
        app,
        token=token,
        max_in_flight=api_settings.max_concurrent,
        cors=CorsPolicy(api_settings.cors_origins),
    )


class _Api:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        # As many threads as requests admitted: an admitted request never waits for one.
        self.threads = anyio.CapacityLimiter(daemon.config.api.max_concurrent)

    async def models(self, request: Request) -> Response:
        records = await self._blocking(self.daemon.models)
        return JSONResponse({"object": "list", "data": [schema.model_object(r) for r in records]})

    async def model(self, request: Request) -> Response:
        name = request.state.model = request.path_params["name"]
        matches = [r for r in await self._blocking(self.daemon.models) if r.name == name]
        if not matches:
            raise NotFound(f"model {name!r} does not exist or is not ready; GET /v1/models lists them")
        return JSONResponse(schema.model_object(matches[0]))

    async def completions(self, request: Request) -> Response:
        model, prompts, options, streaming = schema.parse_completion(await self._body(request))
        request.state.model = model
        if streaming.on:
            return await self._stream(
                model,
                streaming,
                chat=False,
                run=functools.partial(self.daemon.complete, model, prompts, options),
            )
        result = await self._blocking(self.daemon.complete, model, prompts, options)
        return JSONResponse(schema.completion_response(result))

    async def chat(self, request: Request) -> Response:
        body = await self._body(request)
        model, messages, options, streaming = schema.parse_chat(
            body, self.daemon.config.runtime.max_new_tokens
        )
        request.state.model = model
        if streaming.on:
            return await self._stream(
                model, streaming, chat=True, run=functools.partial(self.daemon.chat, model, messages, options)
            )
        result = await self._blocking(self.daemon.chat, model, messages, options)
        return JSONResponse(schema.chat_response(result))

    async def load_adapter(self, request: Request) -> Response:
        """vLLM's route, as a task serving a pinned learnware (no search, no privacy spent)."""
        name, learnware = schema.parse_adapter(await self._body(request), load=True)
        request.state.model = name
        settings = TaskSettings(name=name, learnware=learnware)
        await self._blocking(self.daemon.add_task, settings)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_adapter(self, request: Request) -> Response:
        name, _ = schema.parse_adapter(await self._body(request), load=False)
        request.state.model = name
        await self._blocking(self.daemon.remove_task, name)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def _stream(
        self, model: str, streaming: schema.Streaming, *, chat: bool, run: Callable[[Deltas], Completion]
    ) -> Response:
        record = await self._blocking(self.daemon.ready, model)
        chunks = schema.ChunkStream(
            chat=chat, model=model, record=record, include_usage=streaming.include_usage
        )
        return await stream_answer(lambda deltas: self._blocking(run, deltas), chunks)

    async def _body(self, request: Request) -> dict[str, Any]:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            raise HTTPException(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON, with Content-Type: application/json",
            )
        with anyio.move_on_after(READ_TIMEOUT_S) as reading:
            raw = await self._read(request)
        if reading.cancelled_caught:
            raise HTTPException(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive in {READ_TIMEOUT_S} s")
        return parse_json_object(raw)

    async def _read(self, request: Request) -> bytes:
        """The body, refused as soon as it is known to be too large (declared, or counted)."""
        limit = self.daemon.config.api.max_request_bytes
        too_large = HTTPException(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the body is larger than {limit} bytes (api.max_request_bytes)",
        )
        if int(request.headers.get("content-length", 0)) > limit:  # h11 let only digits through
            raise too_large
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large
        except ClientDisconnect:
            raise HTTPException(
                HTTPStatus.BAD_REQUEST, "the connection closed before the body ended"
            ) from None
        return bytes(body)

    async def _blocking(self, call: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(call, *args), limiter=self.threads)

    async def typed_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LmdockError)
        return typed_error_response(exc)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = exc.detail
        if exc.status_code in (HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED):
            message = f"no route {request.method} {request.url.path}; the API has {ROUTES}"
        return error_response(exc.status_code, message, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL)
