"""Integration: a real market server on port 0, real SQLite, real files, real adapters."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lmdock.client.cache import AdapterCache
from lmdock.client.connection import MarketClient
from lmdock.client.operations import pull
from lmdock.common import serde
from lmdock.common.errors import AlreadyExists, IntegrityError, InvalidArgument, NotFound
from lmdock.common.signing import generate_key
from lmdock.common.spec import release
from lmdock.lab.embedded import embedded_market
from lmdock.server.auth import AccessPolicy
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

from tests.helpers import as_v1_package, cluster_spec, make_adapter, make_package, random_unit_rows
from tests.market_helpers import running_market


@pytest.fixture()
def market(tmp_path: Path, profile, db_url: str):
    """An open market (as the embedded demo's) on SQLite or PostgreSQL."""
    with running_market(
        tmp_path / "market",
        profile,
        db_url=db_url,
        access=AccessPolicy.open_demo(),
        allow_local_base_models=True,
    ) as running:
        yield running.address, running.market


def test_the_embedded_demo_market_serves_anonymous_publishers(tmp_path: Path, profile, packages) -> None:
    with (
        embedded_market(tmp_path / "embedded", profile=profile) as (address, _),
        MarketClient(address) as client,
    ):
        client.upload(packages[0])
        assert client.whoami().authenticated_by == "anonymous"
        assert [lw.card.id for lw in client.list()] == ["learnware-0"]
        # single-user and local: an evaluation's thousands of searches are not rate-limited
        for _ in range(150):
            client.profile()


@pytest.fixture()
def key():
    return generate_key()


@pytest.fixture()
def packages(tmp_path: Path, tiny_bert: Path, profile, key) -> list[Path]:
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    out = []
    for i in range(3):
        path = tmp_path / f"lw{i}.tar"
        make_package(
            path,
            adapter,
            key=key,
            spec=cluster_spec(profile, seed=i),
            learnware_id=f"learnware-{i}",
            base_model=str(tiny_bert),
            domain=["finance", "medical", "math"][i],
        )
        out.append(path)
    return out


@pytest.fixture()
def stub(market):
    channel = grpc.insecure_channel(market[0])
    yield pb_grpc.MarketServiceStub(channel)
    channel.close()


def published(market, packages) -> MarketClient:
    client = MarketClient(market[0])
    for p in packages:
        client.upload(p)
    return client


def test_upload_search_download_verify(market, packages, tmp_path: Path, profile, tiny_bert: Path) -> None:
    client = published(market, packages)
    assert [lw.card.id for lw in client.list()] == ["learnware-0", "learnware-1", "learnware-2"]
    # a user whose data looks like learnware-1's finds it under DP
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(profile.feature_dim) * 0.6
    user = random_unit_rows(np.random.default_rng(99), 300, profile.feature_dim, centre)
    spec = release(user, profile, epsilon=1.0, delta=1e-6).spec
    result = client.search(spec, top_k=3)
    assert result.matches[0].learnware_id == "learnware-1"
    # ranked by debiased distance; the 0-1 score need not fall with it (its denominator varies)
    assert [m.distance for m in result.matches] == sorted(m.distance for m in result.matches)
    assert 0 <= result.matches[-1].score <= result.matches[0].score <= 1
    cache = AdapterCache(tmp_path / "cache")
    manifest = pull(client, cache, "learnware-1")
    assert manifest.card.id == "learnware-1" and cache.load("learnware-1").card.domain == "medical"
    client.close()


def test_v1_packages_stay_listed_and_searchable(market, packages, key, tmp_path: Path, profile) -> None:
    """A package from before format v2 (v1 signature, spec under the profile's v1 id) uploads,
    is counted and indexed with the rest, is found by a search under the current id, and pulls;
    the market names its profile by the current (RFC 8785) id."""
    m = market[1]
    old = as_v1_package(packages[1], tmp_path / "v1.tar", key, profile)
    client = published(market, [packages[0], old, packages[2]])
    assert client.profile().profile_id == profile.profile_id != profile.legacy_profile_id
    assert client.get("learnware-1").spec.profile_id == profile.legacy_profile_id
    assert m.catalogue.count(profile_ids=profile.ids) == 3
    indexed = m.catalogue.iter_index_entries(profile_ids=profile.ids, max_sigma=profile.max_sigma)
    assert [e.listing.learnware_id for e in indexed] == ["learnware-0", "learnware-1", "learnware-2"]
    centre = np.random.default_rng(1).standard_normal(profile.feature_dim) * 0.6  # learnware-1's
    user = random_unit_rows(np.random.default_rng(99), 300, profile.feature_dim, centre)
    spec = release(user, profile, epsilon=1.0, delta=1e-6).spec
    assert spec.profile_id == profile.profile_id
    assert client.search(spec, top_k=1).matches[0].learnware_id == "learnware-1"
    assert pull(client, AdapterCache(tmp_path / "cache"), "learnware-1").format == "lmdock-learnware/1"
    client.close()


def test_resumed_download_yields_identical_bytes(market, packages, tmp_path: Path) -> None:
    client = published(market, packages)
    full = tmp_path / "full.tar"
    header = client.download("learnware-0", full)
    partial = tmp_path / "partial.tar"
    partial.write_bytes(full.read_bytes()[:1000])
    again = client.download("learnware-0", partial)
    assert again.sha256 == header.sha256 and partial.read_bytes() == full.read_bytes()


def test_tampered_blob_is_rejected_by_the_client(market, packages, tmp_path: Path) -> None:
    _, m = market
    client = published(market, packages)
    info = client.get("learnware-0")
    blob = m.blobs.root / info.package_sha256[:2] / info.package_sha256[2:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    dest = tmp_path / "dl.tar"
    with pytest.raises(IntegrityError):
        client.download("learnware-0", dest)
    assert not dest.exists()
    with pytest.raises(IntegrityError):
        pull(client, AdapterCache(tmp_path / "cache"), "learnware-0")
    assert not AdapterCache(tmp_path / "cache").has("learnware-0")


def test_duplicates_are_refused(market, packages) -> None:
    client = published(market, packages[:1])
    with pytest.raises(AlreadyExists):
        client.upload(packages[0])


def test_rejected_upload_leaves_nothing(market, tmp_path: Path, tiny_bert: Path, profile) -> None:
    address, m = market
    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    bad = tmp_path / "bad.tar"
    wrong_profile_spec = cluster_spec(profile, 0)
    object.__setattr__(wrong_profile_spec, "profile_id", "ffffffffffffffff")
    make_package(bad, adapter, key=generate_key(), spec=wrong_profile_spec, base_model=str(tiny_bert))
    with MarketClient(address) as client:
        with pytest.raises(InvalidArgument, match="profile"):
            client.upload(bad)
        assert client.list() == []
    leftovers = [p for p in m.blobs.root.rglob("*") if p.is_file()]
    assert leftovers == []


def test_health_service_reports_serving(market) -> None:
    with grpc.insecure_channel(market[0]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "lmdock.v1.MarketService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    return info.value.code()


def test_bad_input_at_every_rpc(stub, market, packages, profile) -> None:
    published(market, packages[:1]).close()
    IA, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    good = serde.spec_to_pb(cluster_spec(profile, 0))

    def spec(**changes) -> pb.Spec:
        s = pb.Spec()
        s.CopyFrom(good)
        for key, value in changes.items():
            if key == "values":
                del s.values[:]
                s.values.extend(value)
            else:
                setattr(s, key, value)
        return s

    cases = {
        "search without spec": (lambda: stub.Search(pb.SearchRequest(), timeout=5), IA),
        "search wrong dim": (
            lambda: stub.Search(pb.SearchRequest(spec=spec(values=[0.0] * 3)), timeout=5),
            IA,
        ),
        "search NaN": (
            lambda: stub.Search(pb.SearchRequest(spec=spec(values=[float("nan")] * 384)), timeout=5),
            IA,
        ),
        "search wrong profile": (
            lambda: stub.Search(pb.SearchRequest(spec=spec(profile_id="nope")), timeout=5),
            IA,
        ),
        "search wrong version": (lambda: stub.Search(pb.SearchRequest(spec=spec(version=9)), timeout=5), IA),
        "search huge top_k": (lambda: stub.Search(pb.SearchRequest(spec=good, top_k=10**6), timeout=5), IA),
        "get empty id": (lambda: stub.GetLearnware(pb.GetLearnwareRequest(), timeout=5), IA),
        "get unknown": (
            lambda: stub.GetLearnware(pb.GetLearnwareRequest(learnware_id="nope"), timeout=5),
            NF,
        ),
        "get long id": (
            lambda: stub.GetLearnware(pb.GetLearnwareRequest(learnware_id="x" * 500), timeout=5),
            IA,
        ),
        "list bad token": (
            lambda: stub.ListLearnwares(pb.ListLearnwaresRequest(page_token="%%%"), timeout=5),
            IA,
        ),
        "list huge page": (
            lambda: stub.ListLearnwares(pb.ListLearnwaresRequest(page_size=10**6), timeout=5),
            IA,
        ),
        "download unknown": (lambda: stub.Download(pb.DownloadRequest(learnware_id="nope"), timeout=5), NF),
        "download empty id": (lambda: stub.Download(pb.DownloadRequest(), timeout=5), IA),
        "download bad offset": (
            lambda: stub.Download(pb.DownloadRequest(learnware_id="learnware-0", offset=10**12), timeout=5),
            IA,
        ),
        "upload no header": (lambda: stub.Upload(iter([pb.UploadRequest(chunk=b"x")]), timeout=5), IA),
        "upload empty": (lambda: stub.Upload(iter([]), timeout=5), IA),
        "upload bad sha": (
            lambda: stub.Upload(
                iter([pb.UploadRequest(header=pb.UploadHeader(sha256="zz", size=1))]), timeout=5
            ),
            IA,
        ),
        "upload garbage": (
            lambda: stub.Upload(
                iter(
                    [
                        pb.UploadRequest(
                            header=pb.UploadHeader(sha256=hashlib.sha256(b"garbage").hexdigest(), size=7)
                        ),
                        pb.UploadRequest(chunk=b"garbage"),
                    ]
                ),
                timeout=5,
            ),
            IA,
        ),
        "upload short": (
            lambda: stub.Upload(
                iter(
                    [
                        pb.UploadRequest(header=pb.UploadHeader(sha256="a" * 64, size=100)),
                        pb.UploadRequest(chunk=b"abc"),
                    ]
                ),
                timeout=5,
            ),
            IA,
        ),
        "upload wrong sha": (
            lambda: stub.Upload(
                iter(
                    [
                        pb.UploadRequest(header=pb.UploadHeader(sha256="a" * 64, size=3)),
                        pb.UploadRequest(chunk=b"abc"),
                    ]
                ),
                timeout=5,
            ),
            grpc.StatusCode.DATA_LOSS,
        ),
        "upload two headers": (
            lambda: stub.Upload(
                iter(
                    [
                        pb.UploadRequest(header=pb.UploadHeader(sha256="a" * 64, size=3)),
                        pb.UploadRequest(header=pb.UploadHeader()),
                    ]
                ),
                timeout=5,
            ),
            IA,
        ),
    }
    failures = {}
    for name, (call, expected) in cases.items():
        try:
            got = _code(call)
        except BaseException as exc:
            got = repr(exc)[:80]
        if got != expected:
            failures[name] = got
    assert failures == {}


def test_get_profile_round_trips(market, profile) -> None:
    with MarketClient(market[0]) as client:
        assert client.profile() == profile


def test_unknown_learnware_is_not_found_for_the_client(market, tmp_path) -> None:
    with MarketClient(market[0]) as client, pytest.raises(NotFound):
        pull(client, AdapterCache(tmp_path / "cache"), "does-not-exist")
