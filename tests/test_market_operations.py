"""Operating the market: limits, deadlines, draining, reflection, metrics and access logs."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lmdock.client.connection import MarketClient
from lmdock.common import serde
from lmdock.common.hashing import sha256_file
from lmdock.common.signing import generate_key
from lmdock.common.spec import release
from lmdock.server.app import ServerSettings
from lmdock.server.auth import AccessPolicy
from lmdock.server.identity import Role
from lmdock.server.limits import RateLimits, StreamLimits
from lmdock.server.observability import Observer, serve_metrics
from lmdock.v1 import market_pb2 as pb
from lmdock.v1 import market_pb2_grpc as pb_grpc

from tests.helpers import cluster_spec, make_adapter, make_package, random_unit_rows, wait_for
from tests.market_helpers import running_market, status_of


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, profile) -> Path:
    folder = tmp_path_factory.mktemp("ops")
    adapter = make_adapter(tiny_bert, folder / "adapter")
    out = folder / "pkg.tar"
    make_package(out, adapter, key=generate_key(), spec=cluster_spec(profile, 2), base_model=str(tiny_bert))
    return out


def open_market(tmp_path: Path, profile, **kwargs):
    return running_market(
        tmp_path / "market", profile, access=AccessPolicy.open_demo(), allow_local_base_models=True, **kwargs
    )


def upload_requests(package: Path, gate: threading.Event | None = None, *, fail_after: int | None = None):
    """The Upload stream of `package` in 4 KiB chunks; waits on `gate` after the header."""
    data = package.read_bytes()
    yield pb.UploadRequest(header=pb.UploadHeader(sha256=sha256_file(package), size=len(data)))
    if gate is not None:
        gate.wait(30)
    for n, start in enumerate(range(0, len(data), 4096)):
        if fail_after is not None and n == fail_after:
            time.sleep(5)  # outlives the call's deadline
        yield pb.UploadRequest(chunk=data[start : start + 4096])


def test_rate_limit_per_key(tmp_path: Path, profile) -> None:
    settings = ServerSettings(rate_limits=RateLimits(calls_per_second=0.5, burst=3))
    with running_market(tmp_path / "m", profile, settings=settings) as running:
        keys = [running.market.api_keys.create(name, Role.CONSUMER)[1] for name in ("a", "b")]
        with (
            MarketClient(running.address, api_key=keys[0]) as a,
            MarketClient(running.address, api_key=keys[1]) as b,
        ):
            assert [status_of(a.whoami) for _ in range(4)] == ["OK", "OK", "OK", "RESOURCE_EXHAUSTED"]
            assert status_of(b.whoami) == "OK"  # counted per key


def test_concurrent_stream_limit_and_draining_shutdown(tmp_path: Path, profile, package: Path) -> None:
    observer = Observer()
    settings = ServerSettings(rate_limits=RateLimits(), stream_limits=StreamLimits(per_caller=1))
    market = open_market(tmp_path, profile, settings=settings, observer=observer, grace=20.0)
    running = market.__enter__()
    channel = grpc.insecure_channel(running.address)
    stub = pb_grpc.MarketServiceStub(channel)
    gate = threading.Event()
    upload = stub.Upload.future(upload_requests(package, gate), timeout=60)
    try:
        wait_for(lambda: observer.registry.get_sample_value("lmdock_open_streams") == 1)
        with pytest.raises(grpc.RpcError) as second:
            list(stub.Download(pb.DownloadRequest(learnware_id="x"), timeout=10))
        assert second.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # shutting down now lets the open upload finish (grace), and refuses new calls
        server_stopped = threading.Thread(target=lambda: market.__exit__(None, None, None))
        server_stopped.start()
        time.sleep(0.3)
        gate.set()
        assert upload.result(timeout=30).learnware.id == "test-learnware"
        server_stopped.join(30)
        with pytest.raises(grpc.RpcError):
            stub.WhoAmI(pb.WhoAmIRequest(), timeout=3)
    finally:
        gate.set()
        channel.close()


def test_shutdown_turns_health_not_serving_before_draining(tmp_path: Path, profile, package: Path) -> None:
    """Watchers (and load balancers) see NOT_SERVING while calls in flight still drain."""
    market = open_market(tmp_path, profile, grace=20.0)
    running = market.__enter__()
    channel = grpc.insecure_channel(running.address)
    gate = threading.Event()
    upload = pb_grpc.MarketServiceStub(channel).Upload.future(upload_requests(package, gate), timeout=60)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    try:
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopping = threading.Thread(target=lambda: market.__exit__(None, None, None))
        stopping.start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not upload.done()  # still draining: the upload in flight is not cut off
        gate.set()
        assert upload.result(timeout=30).learnware.id == "test-learnware"
        stopping.join(30)
    finally:
        gate.set()
        channel.close()


def test_interrupted_upload_leaves_nothing(tmp_path: Path, profile, package: Path) -> None:
    with open_market(tmp_path, profile) as running, grpc.insecure_channel(running.address) as channel:
        stub = pb_grpc.MarketServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Upload(upload_requests(package, fail_after=2), timeout=1.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        blobs = running.market.blobs.root
        wait_for(lambda: [p for p in blobs.rglob("*") if p.is_file()] == [])
        assert running.market.catalogue.list(page_size=5).items == ()


def test_resumed_download_is_identical(tmp_path: Path, profile, package: Path) -> None:
    with open_market(tmp_path, profile) as running, MarketClient(running.address) as client:
        client.upload(package)
        partial = tmp_path / "partial.tar"
        partial.write_bytes(package.read_bytes()[:5000])
        header = client.download("test-learnware", partial)
        assert sha256_file(partial) == header.sha256 == sha256_file(package)


@pytest.mark.parametrize("enabled", [True, False])
def test_reflection_only_when_enabled(tmp_path: Path, profile, enabled: bool) -> None:
    with (
        running_market(tmp_path / "m", profile, settings=ServerSettings(reflection=enabled)) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        if not enabled:
            with pytest.raises(grpc.RpcError) as info:
                list(stub.ServerReflectionInfo(iter([request]), timeout=5))
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            return
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert {"lmdock.v1.MarketService", "grpc.health.v1.Health"} <= names


def test_message_size_limit(tmp_path: Path, profile) -> None:
    settings = ServerSettings(max_message_bytes=64 * 1024)
    with (
        open_market(tmp_path, profile, settings=settings) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        huge = pb.SearchRequest(spec=pb.Spec(values=[0.5] * 100_000, privacy=pb.Privacy()))
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.MarketServiceStub(channel).Search(huge, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_metrics_and_access_logs_without_spec_values(tmp_path: Path, profile, package: Path, caplog) -> None:
    observer = Observer()
    http, port = serve_metrics(observer, port=0)
    try:
        with (
            open_market(tmp_path, profile, observer=observer) as running,
            MarketClient(running.address) as client,
        ):
            client.upload(package)
            rows = random_unit_rows(np.random.default_rng(5), 100, profile.feature_dim)
            spec = release(rows, profile, epsilon=1.0, delta=1e-6).spec
            with caplog.at_level(logging.DEBUG):
                client.search(spec, mixture=True)
                assert status_of(lambda: client.get("missing")) == "NOT_FOUND"
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        http.shutdown()
    assert 'lmdock_rpc_calls_total{code="OK",method="Search"} 1.0' in text
    assert 'lmdock_rpc_calls_total{code="NOT_FOUND",method="GetLearnware"} 1.0' in text
    assert "lmdock_learnwares 1.0" in text
    access = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lmdock.market.access"]
    # the upload's own line may land after its answer reached the client, inside the capture
    access = [e for e in access if e["method"] != "Upload"]
    assert [(e["method"], e["code"]) for e in access] == [("Search", "OK"), ("GetLearnware", "NOT_FOUND")]
    assert set(access[0]) == {"event", "method", "code", "ms", "principal", "role", "peer"}
    everything = "\n".join(r.getMessage() for r in caplog.records)
    wire = serde.spec_to_pb(spec)
    for value in [*wire.values[:20], spec.privacy.sigma]:
        assert f"{value:.6g}" not in everything and repr(value) not in everything
