"""A bare grpc.aio server, the baseline the market's RPCs are measured against.

No interceptors, no auth, no protobuf: generic handlers on raw bytes, on an event loop of
its own thread (as `MarketServer` runs). `Echo` answers its request; `Put` writes a stream
to a file, hashing it (sha256) and fsyncing it, as an upload must at least do; `Get` streams
a file back in 1 MiB chunks. `RawClient` calls them with the client library's defaults.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc

CHUNK = 1024 * 1024
_OPTIONS = [("grpc.max_receive_message_length", 8 * CHUNK), ("grpc.max_send_message_length", 8 * CHUNK)]


def _same(data: bytes) -> bytes:
    return data


class RawServer:
    """`Echo`, `Put` (into `folder`) and `Get` (of a path) on 127.0.0.1, its port in `port`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    async def _start(self) -> int:
        self._server = grpc.aio.server(options=_OPTIONS)
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo, _same, _same),
            "Put": grpc.stream_unary_rpc_method_handler(self._put, _same, _same),
            "Get": grpc.unary_stream_rpc_method_handler(self._get, _same, _same),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("raw.Raw", handlers),))
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return port

    async def _echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def _put(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        digest = hashlib.sha256()
        with (self.folder / "put.bin").open("wb") as out:
            async for chunk in requests:
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return digest.hexdigest().encode()

    async def _get(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        with Path(request.decode()).open("rb") as src:
            while chunk := src.read(CHUNK):
                yield chunk

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


class RawClient:
    def __init__(self, port: int) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=_OPTIONS)
        self.echo = self._channel.unary_unary("/raw.Raw/Echo")
        self._put = self._channel.stream_unary("/raw.Raw/Put")
        self._get = self._channel.unary_stream("/raw.Raw/Get")

    def put(self, path: Path) -> str:
        def chunks() -> Iterator[bytes]:
            with path.open("rb") as src:
                while chunk := src.read(CHUNK):
                    yield chunk

        return bytes(self._put(chunks(), timeout=600)).decode()

    def get(self, path: Path, dest: Path) -> str:
        digest = hashlib.sha256()
        with dest.open("wb") as out:
            for chunk in self._get(str(path).encode(), timeout=600):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return digest.hexdigest()

    def close(self) -> None:
        self._channel.close()
