"""Fuzzing every MarketService RPC and the package checker: hostile bytes get a precise status.

Issue 14: whatever a caller sends -- random request bytes, well-formed messages with drawn
field values, broken upload streams, mutated packages -- the market answers with a status that
names the refusal, never INTERNAL or UNKNOWN, logs no error or traceback, stays healthy, and
keeps nothing of a refused call (no temp files, blobs, learnwares or keys). Every RPC of the
proto's service is covered, as each role and anonymously. The generators are shared with the
long run, `benchmarks/fuzz.py` (docs/performance.md, "Fuzzing").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from lmdock.v1 import market_pb2 as pb

from tests.market_helpers import TINY_BERT
from tests.security.fuzz_inputs import (
    METHODS,
    mutated_packages,
    raw_requests,
    requests,
    upload_streams,
    whole_upload,
)
from tests.security.fuzz_market import BUGS, ROLES, FuzzMarket, LogWatch, fuzz_market

FAST = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=8,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def watch() -> Iterator[LogWatch]:
    with LogWatch().watching() as watch:
        yield watch


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, profile, tiny_bert: Path, watch) -> Iterator[FuzzMarket]:
    with fuzz_market(
        tmp_path_factory.mktemp("fuzz"), profile, base_model=TINY_BERT, base_folder=tiny_bert
    ) as m:
        yield m


@pytest.fixture(scope="module")
def open_market(
    tmp_path_factory: pytest.TempPathFactory, profile, tiny_bert: Path, watch
) -> Iterator[FuzzMarket]:
    """A market that lets anonymous callers publish, trusting a new publisher's first key."""
    folder = tmp_path_factory.mktemp("fuzz-open")
    with fuzz_market(folder, profile, base_model=TINY_BERT, base_folder=tiny_bert, open_demo=True) as m:
        yield m


def _assert_clean(market: FuzzMarket, watch: LogWatch) -> None:
    """No error logged, the market healthy, nothing left behind."""
    assert watch.lines() == []
    assert market.healthy()
    assert market.leftovers() == dict.fromkeys(market.leftovers(), 0)


@pytest.fixture()
def clean(market: FuzzMarket, watch: LogWatch) -> Iterator[None]:
    yield
    _assert_clean(market, watch)


def test_every_rpc_of_the_service_is_fuzzed() -> None:
    assert set(METHODS) == {m.name for m in pb.DESCRIPTOR.services_by_name["MarketService"].methods}
    assert len(METHODS) >= 11


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_random_request_bytes(market: FuzzMarket, clean: None, method: str, role: str) -> None:
    @FAST
    @given(payloads=raw_requests(method, market.known(method, role)))
    def run(payloads: list[bytes]) -> None:
        assert market.call(method, role, payloads) not in BUGS

    run()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_drawn_field_values(market: FuzzMarket, clean: None, method: str, role: str) -> None:
    @FAST
    @given(payloads=requests(method, market.known(method, role)))
    def run(payloads: list[bytes]) -> None:
        assert market.call(method, role, payloads) not in BUGS

    run()


@pytest.mark.parametrize("role", ROLES)
def test_broken_upload_streams(market: FuzzMarket, clean: None, role: str) -> None:
    @settings(FAST, max_examples=25)
    @given(stream=upload_streams(market.package))
    def run(stream: list[bytes]) -> None:
        assert market.call("Upload", role, stream) not in BUGS

    run()


def test_mutated_packages_get_typed_errors_from_the_checker(
    market: FuzzMarket, clean: None, tmp_path: Path
) -> None:
    @settings(FAST, max_examples=120)
    @given(archive=mutated_packages(market.parts))
    def run(archive: bytes) -> None:
        assert market.run_checker(archive, tmp_path) not in BUGS  # anything untyped propagates
        assert list(tmp_path.iterdir()) == []

    run()


def test_mutated_packages_uploaded_leave_nothing(market: FuzzMarket, clean: None) -> None:
    @settings(FAST, max_examples=20)
    @given(archive=mutated_packages(market.parts))
    def run(archive: bytes) -> None:
        assert market.call("Upload", "publisher", whole_upload(archive)) not in BUGS

    run()


def test_anonymous_uploads_to_an_open_market_leave_nothing(open_market: FuzzMarket, watch: LogWatch) -> None:
    """The open (demo) market registers a new publisher's first key as it publishes: a refused
    package must not leave that key behind."""

    @settings(FAST, max_examples=30)
    @given(archive=mutated_packages(open_market.parts), stream=upload_streams(open_market.package))
    def run(archive: bytes, stream: list[bytes]) -> None:
        assert open_market.call("Upload", "anonymous", whole_upload(archive)) not in BUGS
        assert open_market.call("Upload", "anonymous", stream) not in BUGS

    run()
    _assert_clean(open_market, watch)
