"""The client's one way to talk to a market: a channel factory and a typed SDK.

Every call carries a deadline; only UNAVAILABLE is retried (by gRPC's retry policy, with
backoff), since every other status is an answer. Remote statuses come back as lmdock's typed
errors. A `WireRecorder` interceptor counts (and, for audits, keeps) every request byte that
leaves the client.

Security (see `TlsOptions`): TLS trusting a CA file, mTLS with a client certificate, and
certificate pinning -- with a pin, the client first fetches the market's certificate and
refuses the market (before asking it for anything, its spec profile included) unless the
certificate's sha256 equals the pin. An API key travels as `authorization: Bearer <key>`
metadata, and only over TLS or to a loopback address.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import ipaddress
import json
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from lmdock.common import serde
from lmdock.common.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    LmdockError,
    error_for_status,
)
from lmdock.common.hashing import sha256_file
from lmdock.common.profile import SpecProfile
from lmdock.common.records import Caller, LearnwareInfo, PackageHeader, SearchResult, SigningKeyInfo
from lmdock.common.spec import Spec
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

__all__ = ["MarketClient", "TlsOptions", "WireRecorder", "certificate_sha256", "open_channel"]

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


@dataclass(frozen=True)
class TlsOptions:
    """How to reach a market over TLS.

    ca_file: PEM of the CA(s) that signed the market's certificate (default: the system's roots,
        or, with only a pin, the pinned certificate itself -- for a self-signed market).
    cert_file, key_file: this client's certificate and key, for a market that requires mTLS.
    pin_sha256: hex sha256 of the market certificate (DER); any other certificate is refused.
    server_name: the name to verify in the certificate when it differs from the address's host.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    pin_sha256: str = ""
    server_name: str = ""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidArgument("a client certificate needs its key, and a key its certificate")
        pin = self.normalized_pin
        if pin and (len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin)):
            raise InvalidArgument("the certificate pin must be a sha256 in hex (64 digits, ':' allowed)")

    @property
    def normalized_pin(self) -> str:
        return self.pin_sha256.replace(":", "").strip().lower()


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} {path}: {exc.strerror}") from None


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArgument(f"market address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def certificate_sha256(address: str, tls: TlsOptions, *, timeout: float = 10.0) -> tuple[str, bytes]:
    """(sha256 hex of the DER certificate the market presents, that certificate as PEM).

    Only fetches: the certificate is not verified here (the pin, or gRPC's TLS, does that).
    """
    host, port = _split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=tls.server_name or host) as conn,
        ):
            der = conn.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise FailedPrecondition(f"cannot fetch the TLS certificate of {address}: {exc}") from None
    if der is None:
        raise IntegrityError(f"{address} presented no certificate")
    return hashlib.sha256(der).hexdigest(), ssl.DER_cert_to_PEM_cert(der).encode()


class _ApiKeyMetadata(
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor
):
    """Adds `authorization: Bearer <key>` to every call."""

    def __init__(self, api_key: str) -> None:
        self._entry = ("authorization", f"Bearer {api_key}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._entry]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


def open_channel(
    address: str,
    *,
    interceptors: tuple[Any, ...] = (),
    tls: TlsOptions | None = None,
    api_key: str | None = None,
) -> grpc.Channel:
    """A channel to `address` with message limits and UNAVAILABLE retries.

    Plaintext without `tls`. With a pin, the market's certificate is checked first and the
    market refused (IntegrityError) unless it matches.
    """
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _RETRY_POLICY),
    ]
    host, _ = _split_address(address)
    if tls is None:
        if api_key and not _is_loopback(host):
            raise InvalidArgument(
                f"refusing to send an API key to {address} without TLS; give the market's CA (--tls-ca)"
            )
        channel = grpc.insecure_channel(address, options=options)
    else:
        roots = _read(tls.ca_file, "CA file")
        if tls.normalized_pin:
            seen, pem = certificate_sha256(address, tls)
            if seen != tls.normalized_pin:
                raise IntegrityError(
                    f"market {address} presented certificate sha256 {seen}, not the pinned "
                    f"{tls.normalized_pin}; refusing it"
                )
            roots = roots or pem
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=_read(tls.key_file, "client key"),
            certificate_chain=_read(tls.cert_file, "client certificate"),
        )
        channel = grpc.secure_channel(address, credentials, options=options)
    chain = (*interceptors, _ApiKeyMetadata(api_key)) if api_key else interceptors
    return grpc.intercept_channel(channel, *chain) if chain else channel


def _typed(call: Callable[[], T]) -> T:
    try:
        return call()
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        raise error_for_status(code.name, f"market: {details}") from None


class MarketClient:
    """Typed access to a market; use as a context manager to close the channel."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 30.0,
        recorder: WireRecorder | None = None,
        tls: TlsOptions | None = None,
        api_key: str | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.recorder = recorder or WireRecorder()
        self._channel = open_channel(address, interceptors=(self.recorder,), tls=tls, api_key=api_key)
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
        self,
        *,
        domain: str = "",
        tag: str = "",
        publisher: str = "",
        base_model: str = "",
        task_kind: str = "",
        page_size: int = 0,
    ) -> list[LearnwareInfo]:
        """Every learnware matching the filters (follows page tokens)."""
        out: list[LearnwareInfo] = []
        token = ""
        while True:
            request = pb.ListLearnwaresRequest(
                page_size=page_size,
                page_token=token,
                domain=domain,
                tag=tag,
                publisher=publisher,
                base_model=base_model,
                task_kind=task_kind,
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

    def unpublish(self, learnware_id: str) -> str:
        """Remove a learnware (publishers: their own; admins: any); returns its id."""
        request = pb.UnpublishRequest(learnware_id=learnware_id)
        return _typed(lambda: self._stub.Unpublish(request, timeout=self.timeout)).learnware_id

    def register_signing_key(self, public_key: str, *, publisher: str = "") -> SigningKeyInfo:
        """Register a base64 Ed25519 public key for the caller (admins: for `publisher`)."""
        request = pb.RegisterSigningKeyRequest(public_key=public_key, publisher=publisher)
        response = _typed(lambda: self._stub.RegisterSigningKey(request, timeout=self.timeout))
        return serde.signing_key_from_pb(response.key)

    def signing_keys(self, publisher: str = "") -> builtins.list[SigningKeyInfo]:
        """Registered signing keys, revoked ones included (public: needs no credentials)."""
        request = pb.ListSigningKeysRequest(publisher=publisher)
        response = _typed(lambda: self._stub.ListSigningKeys(request, timeout=self.timeout))
        return [serde.signing_key_from_pb(k) for k in response.keys]

    def revoke_signing_key(self, key_id: str) -> SigningKeyInfo:
        request = pb.RevokeSigningKeyRequest(key_id=key_id)
        response = _typed(lambda: self._stub.RevokeSigningKey(request, timeout=self.timeout))
        return serde.signing_key_from_pb(response.key)

    def whoami(self) -> Caller:
        """Who the market takes this client for (principal = publisher name for publishers)."""
        response = _typed(lambda: self._stub.WhoAmI(pb.WhoAmIRequest(), timeout=self.timeout))
        return Caller(
            principal=response.principal, role=response.role, authenticated_by=response.authenticated_by
        )
