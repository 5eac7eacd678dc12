"""A real market to fuzz, shared by `tests/security/test_fuzz.py` and `benchmarks/fuzz.py`.

The market runs on port 0 with SQLite (or a PostgreSQL URL), API keys for every role (no
anonymous access but the public RPC, unless `open_demo`) and no rate limit (a refusal for
pace would hide the code behind it). It holds two learnwares and a signing key of publisher
"acme"; the fuzzing publisher "fuzzpub" has a registered key and a valid, unpublished package
to mutate. Calls go out as raw bytes and come back as status names; `leftovers` says what a
refused call left behind; `LogWatch` collects every ERROR record and traceback the process logs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lmdock.client.connection import MarketClient
from lmdock.common.errors import LmdockError
from lmdock.common.package_reader import read_package
from lmdock.common.profile import SpecProfile
from lmdock.common.signing import generate_key, public_key_to_b64, sign_manifest
from lmdock.server.app import ServerSettings
from lmdock.server.auth import AccessPolicy
from lmdock.server.checks import check_package
from lmdock.server.identity import Role
from lmdock.server.limits import RateLimits
from lmdock.v1 import market_pb2 as pb

from tests.helpers import cluster_spec, make_adapter, make_package
from tests.market_helpers import Running, running_market
from tests.security.fuzz_inputs import METHODS, SERVICE, Known, PackageParts

__all__ = ["ROLES", "FuzzMarket", "LogWatch", "fuzz_market"]

ROLES = ("anonymous", "consumer", "publisher", "admin")
OWNER, FUZZER = "acme", "fuzzpub"
#: RPCs that change the market: a caller is never handed ids it could change with them.
MUTATING = ("Upload", "Unpublish", "RegisterSigningKey", "RevokeSigningKey")
#: Statuses that mean a bug in the market rather than a refusal; the last is the client's:
#: the market's status message was too large for the trailer that carries it.
BUGS = ("INTERNAL", "UNKNOWN", "TRAILER_TOO_LARGE")


class LogWatch(logging.Handler):
    """Collects what the process logs at ERROR or above, and every record with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    @contextmanager
    def watching(self) -> Iterator[LogWatch]:
        root = logging.getLogger()
        root.addHandler(self)
        try:
            yield self
        finally:
            root.removeHandler(self)

    def lines(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()} ({r.exc_info[0].__name__ if r.exc_info else ''})"
            for r in self.records
        ]


@dataclass
class FuzzMarket:
    running: Running
    channel: grpc.Channel
    api_keys: dict[str, str]
    parts: PackageParts  # fuzzpub's valid package, taken apart
    package: bytes  # and whole
    profile: SpecProfile
    owner_ids: tuple[str, ...]
    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, status) -> calls
    accepted_uploads: int = 0
    #: publishers of accepted uploads: on an open market their first key is theirs to keep
    accepted_publishers: set[str] = field(default_factory=set)

    def known(self, method: str, role: str) -> Known:
        """What a caller may name: everything, except what it could change with `method`."""
        market = self.running.market
        keys = market.signing_keys.list()
        if method in MUTATING and role == "admin":
            return Known(self.profile)
        if method in MUTATING and role == "publisher":
            keys = [k for k in keys if k.publisher != FUZZER]
        return Known(
            self.profile,
            learnware_ids=self.owner_ids,
            key_ids=tuple(sorted({k.key_id for k in keys})),
            publishers=(OWNER, FUZZER),
            public_keys=tuple(k.public_key for k in keys),
        )

    def call(self, method: str, role: str, payloads: list[bytes], *, timeout: float = 20.0) -> str:
        """Send raw request bytes as `role`; the status name ("OK" included) it answers with."""
        descriptor = METHODS[method]
        path = f"/{SERVICE.full_name}/{method}"
        metadata = (("authorization", f"Bearer {self.api_keys[role]}"),) if role in self.api_keys else ()
        try:
            if descriptor.client_streaming:
                reply = self.channel.stream_unary(path)(iter(payloads), timeout=timeout, metadata=metadata)
                if method == "Upload":
                    self._unpublish(pb.UploadResponse.FromString(reply).learnware)
            elif descriptor.server_streaming:
                for _ in self.channel.unary_stream(path)(payloads[0], timeout=timeout, metadata=metadata):
                    pass
            else:
                self.channel.unary_unary(path)(payloads[0], timeout=timeout, metadata=metadata)
            status = "OK"
        except grpc.RpcError as exc:
            too_large = "received metadata size exceeds" in (exc.details() or "")
            status = "TRAILER_TOO_LARGE" if too_large else exc.code().name
        self.statuses[method, status] += 1
        return status

    def _unpublish(self, learnware: pb.Learnware) -> None:
        """A fuzzed upload that passed every check was a valid package: take it down again."""
        self.accepted_uploads += 1
        self.accepted_publishers.add(learnware.publisher)
        with MarketClient(self.running.address, api_key=self.api_keys["admin"]) as admin:
            admin.unpublish(learnware.id)

    def leftovers(self, *, settle_s: float = 5.0) -> dict[str, int]:
        """What calls left behind: temp files, unlisted blobs, learnwares and keys beyond the seed.

        A refused upload's temp file goes when its handler ends, which can be just after grpc
        answered the caller (a message over the size limit): up to `settle_s` is allowed for it."""
        deadline = time.monotonic() + settle_s
        while any((found := self._leftovers()).values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def _leftovers(self) -> dict[str, int]:
        market = self.running.market
        tmp = market.blobs.root / "tmp"
        listed = market.catalogue.package_digests()
        kept = self.accepted_publishers - {OWNER, FUZZER}  # first keys of accepted new publishers
        keys = [k for k in market.signing_keys.list() if k.publisher not in kept]
        return {
            "tmp_files": sum(1 for p in tmp.rglob("*") if p.is_file()),
            "orphan_blobs": len(market.blobs.digests() - listed),
            "new_learnwares": len(listed) - len(self.owner_ids),
            "new_or_revoked_keys": len(keys) - 2 + sum(1 for k in keys if k.revoked_at),
        }

    def run_checker(self, archive: bytes, workdir: Path) -> str:
        """Run the market's package checker (read in place, then check) on `archive`: "OK" or
        the status of the typed error it refused with; any other exception propagates."""
        path = workdir / "package.tar"
        path.write_bytes(archive)
        try:
            check_package(read_package(path), self.profile, self.running.market.base_models)
            return "OK"
        except LmdockError as exc:
            return exc.status
        finally:
            path.unlink()

    def healthy(self) -> bool:
        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _register(running: Running, publisher: str) -> Ed25519PrivateKey:
    key = generate_key()
    running.market.signing_keys.register(publisher, public_key_to_b64(key.public_key()), registered_by="fuzz")
    return key


@contextmanager
def fuzz_market(
    folder: Path,
    profile: SpecProfile,
    *,
    base_model: str,
    base_folder: Path,
    db_url: str = "",
    open_demo: bool = False,
) -> Iterator[FuzzMarket]:
    """The seeded market (see the module docstring; `db_url` "" is SQLite; `open_demo` lets
    anonymous callers publish, trusting a new publisher's first key), served until the block ends."""
    adapter = make_adapter(base_folder, folder / "adapter", base_name=base_model)
    settings = ServerSettings(rate_limits=RateLimits(calls_per_second=0))
    with running_market(
        folder / "market",
        profile,
        db_url=db_url,
        base_models={base_model: base_folder},
        settings=settings,
        access=AccessPolicy.open_demo() if open_demo else None,
    ) as running:
        market = running.market
        api_keys = {
            "consumer": market.api_keys.create("fuzz-consumer", Role.CONSUMER)[1],
            "publisher": market.api_keys.create(FUZZER, Role.PUBLISHER)[1],
            "admin": market.api_keys.create("fuzz-admin", Role.ADMIN)[1],
        }
        owner_key = _register(running, OWNER)
        fuzzer_key = _register(running, FUZZER)
        owner_ids = ("acme-one", "acme-two")
        with MarketClient(running.address, api_key=market.api_keys.create(OWNER, Role.PUBLISHER)[1]) as owner:
            for seed, learnware_id in enumerate(owner_ids, start=1):
                out = folder / f"{learnware_id}.tar"
                make_package(
                    out,
                    adapter,
                    key=owner_key,
                    spec=cluster_spec(profile, seed),
                    learnware_id=learnware_id,
                    base_model=base_model,
                    publisher=OWNER,
                )
                owner.upload(out)
        package = folder / "fuzz-base.tar"
        make_package(
            package,
            adapter,
            key=fuzzer_key,
            spec=cluster_spec(profile, 7),
            learnware_id="fuzz-base",
            base_model=base_model,
            publisher=FUZZER,
        )
        data = package.read_bytes()
        parts = PackageParts.read(data, lambda manifest: sign_manifest(manifest, fuzzer_key).to_dict())
        with grpc.insecure_channel(running.address) as channel:
            yield FuzzMarket(
                running=running,
                channel=channel,
                api_keys=api_keys,
                parts=parts,
                package=data,
                profile=profile,
                owner_ids=owner_ids,
            )
