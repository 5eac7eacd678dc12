"""Identical uploads at once: one is published, the other refused, the bytes stay (issue 14, item 4).

The loser of the race used to delete the blob both had staged (blobs are shared by sha256),
leaving a listed learnware whose Download was NOT_FOUND in 10 of 10 trials; on an open market
the two also raced to register the publisher's first key (a UNIQUE violation: INTERNAL).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from lmdock.client.connection import MarketClient
from lmdock.common.errors import AlreadyExists
from lmdock.server.auth import AccessPolicy

from tests.helpers import make_adapter
from tests.market_helpers import TINY_BERT, running_market
from tests.test_upload_checks import package

TRIALS = 3


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_adapter(tiny_bert, tmp_path_factory.mktemp("adapter") / "a", base_name=TINY_BERT)


def test_a_losing_duplicate_upload_leaves_the_winners_bytes(
    tmp_path: Path, tiny_bert: Path, adapter: Path, profile
) -> None:
    with running_market(
        tmp_path / "market", profile, base_models={TINY_BERT: tiny_bert}, access=AccessPolicy.open_demo()
    ) as market:
        for trial in range(TRIALS):
            pkg = package(tmp_path, adapter, profile, name=f"pkg-{trial}", learnware_id=f"race-{trial}")
            start = threading.Barrier(2)
            outcomes: list[str] = []

            def upload(
                start: threading.Barrier = start, outcomes: list[str] = outcomes, pkg: Path = pkg
            ) -> None:
                with MarketClient(market.address) as client:
                    start.wait()
                    try:
                        client.upload(pkg)
                        outcomes.append("published")
                    except AlreadyExists:
                        outcomes.append("refused")

            threads = [threading.Thread(target=upload) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(outcomes) == ["published", "refused"], (trial, outcomes)
            with MarketClient(market.address) as client:
                got = tmp_path / f"got-{trial}.tar"
                client.download(f"race-{trial}", got)  # the listed package's bytes are all there
                assert got.read_bytes() == pkg.read_bytes()
        with MarketClient(market.address) as client:
            assert sorted(lw.card.id for lw in client.list()) == [f"race-{t}" for t in range(TRIALS)]
