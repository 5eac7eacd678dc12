"""The client's typed SDK for a market (`MarketClient`); channels come from `channel`.

Every call carries a deadline, and remote statuses come back as lmdock's typed errors. See
`lmdock.client.channel` for TLS, mTLS, certificate pinning and API keys.
"""

from __future__ import annotations

import builtins
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lmdock.client.channel import TlsOptions, WireRecorder, open_channel, unreachable_message
from lmdock.common import serde
from lmdock.common.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    LmdockError,
    error_for_status,
)
from lmdock.common.grpc_errors import TypedErrorsInterceptor
from lmdock.common.hashing import hash_file_into, sha256_file
from lmdock.common.market_types import Caller, LearnwareInfo, PackageHeader, SearchResult, SigningKeyInfo
from lmdock.common.profile import SpecProfile
from lmdock.common.signing import prove_possession, public_key_to_b64
from lmdock.common.spec import Spec
from lmdock.common.task_vector import TaskVectorProfile
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

__all__ = ["MarketClient", "TlsOptions", "WireRecorder", "open_channel"]

UPLOAD_CHUNK = 1024 * 1024


def _market_error(address: str) -> Callable[[str, str], LmdockError]:
    """Typed errors for `address`'s statuses, "market: " first (the daemon's client tells the
    market's UNAVAILABLE from its own by it); a transport failure in words a person reads."""

    def to_error(status: str, details: str) -> LmdockError:
        if status == "UNAVAILABLE":
            details = unreachable_message(address, details)
        return error_for_status(status, f"market: {details}")

    return to_error


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
        typed = TypedErrorsInterceptor(_market_error(address))  # first: the recorder sees plain gRPC
        self._channel = open_channel(address, interceptors=(typed, self.recorder), tls=tls, api_key=api_key)
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

    def profiles(self) -> list[SpecProfile]:
        """Every profile the market serves that this client can compute specs under, newest first."""
        response = self._stub.GetSpecProfile(pb.GetSpecProfileRequest(), timeout=self.timeout)
        return serde.supported_profiles(response)

    def task_vector_profiles(self) -> list[TaskVectorProfile]:
        """Every task-vector profile the market serves that this client knows, newest first."""
        response = self._stub.GetSpecProfile(pb.GetSpecProfileRequest(), timeout=self.timeout)
        return serde.supported_task_vector_profiles(response)

    def task_vector_profile(self) -> TaskVectorProfile:
        """The newest task-vector profile the market serves (issue 22)."""
        supported = self.task_vector_profiles()
        if not supported:
            raise FailedPrecondition(
                f"the market at {self.address} serves no task-vector profile (its operator adds one with "
                "`lmdock-market add-profile --kind task-vector --base NAME`)"
            )
        return supported[0]

    def profile(self) -> SpecProfile:
        """The newest profile the market serves that this client supports (docs/search.md)."""
        supported = self.profiles()
        if not supported:
            raise FailedPrecondition("the market serves no spec profile this lmdock supports: upgrade lmdock")
        return supported[0]

    def search(self, spec: Spec, *, top_k: int = 0, mixture: bool = False) -> SearchResult:
        request = pb.SearchRequest(spec=serde.spec_to_pb(spec), top_k=top_k, mixture=mixture)
        return serde.search_result_from_pb(self._stub.Search(request, timeout=self.timeout))

    def get(self, learnware_id: str) -> LearnwareInfo:
        request = pb.GetLearnwareRequest(learnware_id=learnware_id)
        return serde.learnware_from_pb(self._stub.GetLearnware(request, timeout=self.timeout).learnware)

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
            response: pb.ListLearnwaresResponse = self._stub.ListLearnwares(request, timeout=self.timeout)
            out.extend(serde.learnware_from_pb(m) for m in response.learnwares)
            token = response.next_page_token
            if not token:
                return out

    def has_learnwares(self) -> bool:
        """Whether the market lists any learnware (one page of one)."""
        request = pb.ListLearnwaresRequest(page_size=1)
        response: pb.ListLearnwaresResponse = self._stub.ListLearnwares(request, timeout=self.timeout)
        return len(response.learnwares) > 0

    def download(self, learnware_id: str, dest: Path, *, stream_timeout: float = 600.0) -> PackageHeader:
        """Stream the package into `dest`, resuming after any bytes already there; verify sha256.

        The bytes are hashed as they are written (a resumed download hashes the part it had
        first), so the file is never read back. On a hash mismatch the partial file is deleted
        and IntegrityError raised.
        """
        offset = dest.stat().st_size if dest.exists() else 0
        request = pb.DownloadRequest(learnware_id=learnware_id, offset=offset)
        digest = hashlib.sha256()

        def run() -> tuple[PackageHeader, int]:
            responses = self._stub.Download(request, timeout=stream_timeout)
            first = next(responses, None)
            if first is None or first.WhichOneof("part") != "header":
                raise IntegrityError("market sent no package header")
            header = serde.header_from_pb(first.header)
            if header.learnware_id != learnware_id:
                raise IntegrityError("market sent a different learnware than requested")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if offset:
                hash_file_into(digest, dest)
            with dest.open("ab") as out:
                for message in responses:
                    if message.WhichOneof("part") != "chunk":
                        raise IntegrityError("market sent a second header")
                    digest.update(message.chunk)
                    out.write(message.chunk)
                    if out.tell() > header.size:
                        break
                out.flush()
                os.fsync(out.fileno())
                return header, out.tell()

        try:
            header, size = run()
        except LmdockError as exc:
            if exc.status == "INVALID_ARGUMENT" and offset:
                dest.unlink(missing_ok=True)  # stale partial from another version: start over
            raise
        if digest.hexdigest() != header.sha256 or size != header.size:
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

        response = self._stub.Upload(requests(), timeout=stream_timeout)
        return serde.learnware_from_pb(response.learnware)

    def unpublish(self, learnware_id: str) -> str:
        """Remove a learnware (publishers: their own; admins: any); returns its id."""
        request = pb.UnpublishRequest(learnware_id=learnware_id)
        return self._stub.Unpublish(request, timeout=self.timeout).learnware_id

    def register_signing_key(self, key: Ed25519PrivateKey, *, publisher: str = "") -> SigningKeyInfo:
        """Register `key`'s public half for the caller (admins: for `publisher`).

        The market wants proof that the caller holds the key, signed for the caller's principal
        as the market sees it: WhoAmI names it, then the key signs the registration message.
        """
        principal = self.whoami().principal
        proof = prove_possession(key, principal=principal, publisher=publisher or principal)
        request = pb.RegisterSigningKeyRequest(
            public_key=public_key_to_b64(key.public_key()), publisher=publisher, proof=proof
        )
        response = self._stub.RegisterSigningKey(request, timeout=self.timeout)
        return serde.signing_key_from_pb(response.key)

    def signing_keys(self, publisher: str = "") -> builtins.list[SigningKeyInfo]:
        """Registered signing keys, revoked ones included (public: needs no credentials)."""
        request = pb.ListSigningKeysRequest(publisher=publisher)
        response = self._stub.ListSigningKeys(request, timeout=self.timeout)
        return [serde.signing_key_from_pb(k) for k in response.keys]

    def revoke_signing_key(self, key_id: str, *, publisher: str = "") -> SigningKeyInfo:
        """Revoke a key of the caller (admins: of `publisher`; "" when only one has this id)."""
        request = pb.RevokeSigningKeyRequest(key_id=key_id, publisher=publisher)
        response = self._stub.RevokeSigningKey(request, timeout=self.timeout)
        return serde.signing_key_from_pb(response.key)

    def whoami(self) -> Caller:
        """Who the market takes this client for (principal = publisher name for publishers)."""
        response = self._stub.WhoAmI(pb.WhoAmIRequest(), timeout=self.timeout)
        return Caller(
            principal=response.principal, role=response.role, authenticated_by=response.authenticated_by
        )
