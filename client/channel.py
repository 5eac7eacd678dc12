"""Channels to a market: TLS, mTLS, certificate pins, API keys, retries, byte counting.

Only UNAVAILABLE is retried (by gRPC's retry policy, with backoff), since every other status is
an answer. A `WireRecorder` interceptor counts (and, for audits, keeps) every request byte that
leaves the client.

Security (see `TlsOptions`): TLS trusting a CA file, mTLS with a client certificate, and
certificate pinning -- with a pin, the client first fetches the market's certificate and
refuses the market (before asking it for anything, its spec profile included) unless the
certificate's sha256 equals the pin. An API key travels as `authorization: Bearer <key>`
metadata, and only over TLS or to a loopback address.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from lmdock.client.addresses import is_loopback
from lmdock.common.errors import FailedPrecondition, IntegrityError, InvalidArgument, Unavailable

__all__ = [
    "MAX_MESSAGE_BYTES",
    "TlsOptions",
    "WireRecorder",
    "certificate_sha256",
    "clean_api_key",
    "open_channel",
    "unreachable_message",
]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024

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
    _, sep, rest = address.partition("://")
    if sep:  # a URL: the scheme is the mistake, not TLS
        raise InvalidArgument(
            f"market address is host:port, without a scheme: give {rest.rstrip('/')!r}, not {address!r} "
            "(for a market that serves TLS, add --tls-ca)"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArgument(f"market address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _resolvable(host: str, port: int) -> bool:
    try:
        socket.getaddrinfo(host, port)
    except (OSError, UnicodeError):
        return False
    return True


def clean_api_key(api_key: str | None) -> str | None:
    """The key without the whitespace around it (`$(cat keyfile)` keeps a newline); None when empty.

    A key is printable ASCII (what a header carries): anything else is refused here, readably,
    instead of by gRPC's C core.
    """
    key = (api_key or "").strip()
    if not key:
        return None
    if not key.isascii() or not key.isprintable():
        raise InvalidArgument("the API key holds characters a header cannot carry; check how it was copied")
    return key


#: What gRPC's C core says when it cannot connect, and what a person reads instead.
_TRANSPORT_FAILURES = (
    ("resolv", "its host name does not resolve; check the address"),
    ("lookup", "its host name does not resolve; check the address"),
    ("connection refused", "connection refused; is the market running at that address and port?"),
    ("timeout", "no answer in time; check the address, the network and any firewall"),
    ("deadline", "no answer in time; check the address, the network and any firewall"),
    ("ssl", "the TLS handshake failed; check --tls-ca, --tls-server-name and the certificate"),
    ("handshake", "the TLS handshake failed; check --tls-ca, --tls-server-name and the certificate"),
    (
        "socket closed",
        "the market closed the connection; a market that serves TLS needs --tls-ca (or tls_ca)",
    ),
)


def unreachable_message(address: str, details: str) -> str:
    """A readable line for an UNAVAILABLE status from gRPC's transport (its wording, translated)."""
    lower = details.lower()
    reason = next((text for needle, text in _TRANSPORT_FAILURES if needle in lower), details)
    return f"cannot reach {address}: {reason}"


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
    host, port = _split_address(address)
    api_key = clean_api_key(api_key)
    if tls is None:
        if api_key and not is_loopback(host):
            if not _resolvable(host, port):
                raise Unavailable(f"market: cannot reach {address}: its host name does not resolve")
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
