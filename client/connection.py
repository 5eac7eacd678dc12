"""The client's one way to talk to a market: a channel factory and a typed SDK.

Every call carries a deadline; only UNAVAILABLE is retried (by gRPC's retry policy, with
backoff), since every other status is an answer. Remote statuses come back as lmdock's typed
errors. A `WireRecorder` interceptor counts (and, for audits, keeps) every request byte that
leaves the client.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from lmdock.common import serde
from lmdock.common.errors import IntegrityError, InvalidArgument, LmdockError, error_for_status
from lmdock.common.hashing import sha256_file
from lmdock.common.profile import SpecProfile
from lmdock.common.records import LearnwareInfo, PackageHeader, SearchResult
from lmdock.common.spec import Spec
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

__all__ = ["MarketClient", "WireRecorder", "open_channel"]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
UPLOAD_CHUNK = 1024 * 1024
T = TypeVar("T")

_RETRY_POLICY = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "lmdock.v1.MarketService"}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "3s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


@dataclass
class WireRecorder(
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor
):
    """Counts the serialized bytes of every request message; keeps them if `keep` is set."""

    keep: bool = False
    bytes_sent: int = 0
    messages: list[bytes] = field(default_factory=list)

    def _record(self, request: Any) -> None:
        data = request.SerializeToString()
        self.bytes_sent += len(data)
        if self.keep:
            self.messages.append(data)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._record(request)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._record(request)
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        def recorded() -> Iterator[Any]:
            for request in request_iterator:
                self._record(request)
                yield request

        return continuation(details, recorded())


def open_channel(address: str, *, interceptors: tuple[Any, ...] = ()) -> grpc.Channel:
    """An insecure channel to `address` with message limits and UNAVAILABLE retries."""
    channel = grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _RETRY_POLICY),
        ],
    )
    return grpc.intercept_channel(channel, *interceptors) if interceptors else channel


def _typed(call: Callable[[], T]) -> T:
    try:
        return call()
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        raise error_for_status(code.name, f"market: {details}") from None


class MarketClient:
    """Typed access to a market; use as a context manager to close the channel."""

    def __init__(self, address: str, *, timeout: float = 30.0, recorder: WireRecorder | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self.recorder = recorder or WireRecorder()
        self._channel = open_channel(address, interceptors=(self.recorder,))
        self._stub = pb_grpc.MarketServiceStub(self._channel)

    def __enter__(self) -> MarketClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    @property
    def bytes_sent(self) -> int:
        return self.recorder.bytes_sent

    def profile(self) -> SpecProfile:
        response = _typed(lambda: self._stub.GetSpecProfile(pb.GetSpecProfileRequest(), timeout=self.timeout))
        return serde.profile_from_pb(response.profile)

    def search(self, spec: Spec, *, top_k: int = 0, mixture: bool = False) -> SearchResult:
        request = pb.SearchRequest(spec=serde.spec_to_pb(spec), top_k=top_k, mixture=mixture)
        return serde.search_result_from_pb(_typed(lambda: self._stub.Search(request, timeout=self.timeout)))

    def get(self, learnware_id: str) -> LearnwareInfo:
        request = pb.GetLearnwareRequest(learnware_id=learnware_id)
        return serde.learnware_from_pb(
            _typed(lambda: self._stub.GetLearnware(request, timeout=self.timeout)).learnware
        )

    def list(
        self, *, domain: str = "", tag: str = "", publisher: str = "", page_size: int = 0
    ) -> list[LearnwareInfo]:
        """Every learnware matching the filters (follows page tokens)."""
        out: list[LearnwareInfo] = []
        token = ""
        while True:
            request = pb.ListLearnwaresRequest(
                page_size=page_size, page_token=token, domain=domain, tag=tag, publisher=publisher
            )
            response: pb.ListLearnwaresResponse = _typed(
                functools.partial(self._stub.ListLearnwares, request, timeout=self.timeout)
            )
            out.extend(serde.learnware_from_pb(m) for m in response.learnwares)
            token = response.next_page_token
            if not token:
                return out

    def download(self, learnware_id: str, dest: Path, *, stream_timeout: float = 600.0) -> PackageHeader:
        """Stream the package into `dest`, resuming after any bytes already there; verify sha256.

        On a hash mismatch the partial file is deleted and IntegrityError raised.
        """
        offset = dest.stat().st_size if dest.exists() else 0
        request = pb.DownloadRequest(learnware_id=learnware_id, offset=offset)

        def run() -> PackageHeader:
            responses = self._stub.Download(request, timeout=stream_timeout)
            first = next(responses, None)
            if first is None or first.WhichOneof("part") != "header":
                raise IntegrityError("market sent no package header")
            header = serde.header_from_pb(first.header)
            if header.learnware_id != learnware_id:
                raise IntegrityError("market sent a different learnware than requested")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("ab") as out:
                for message in responses:
                    if message.WhichOneof("part") != "chunk":
                        raise IntegrityError("market sent a second header")
                    out.write(message.chunk)
                    if out.tell() > header.size:
                        break
                out.flush()
                os.fsync(out.fileno())
            return header

        try:
            header = _typed(run)
        except LmdockError as exc:
            if exc.status == "INVALID_ARGUMENT" and offset:
                dest.unlink(missing_ok=True)  # stale partial from another version: start over
            raise
        if sha256_file(dest) != header.sha256 or dest.stat().st_size != header.size:
            dest.unlink(missing_ok=True)
            raise IntegrityError(f"downloaded package for {learnware_id!r} does not match its sha256")
        return header

    def upload(self, package: Path, *, stream_timeout: float = 600.0) -> LearnwareInfo:
        size = package.stat().st_size
        if size == 0:
            raise InvalidArgument(f"{package} is empty")
        digest = sha256_file(package)

        def requests() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(header=pb.UploadHeader(sha256=digest, size=size))
            with package.open("rb") as fh:
                while block := fh.read(UPLOAD_CHUNK):
                    yield pb.UploadRequest(chunk=block)

        response = _typed(lambda: self._stub.Upload(requests(), timeout=stream_timeout))
        return serde.learnware_from_pb(response.learnware)
