"""A package may not make the market run its regular expressions (PEFT's pattern fields).

`"(.|.)*Z"` as `target_modules` once pinned a core for tens of seconds while Health and List
timed out: PEFT runs a string `target_modules` (and `layers_pattern`, the keys of
`rank_pattern` / `alpha_pattern`) with `re` against every module name. The package format
now takes module choices only as plain lists of names and refuses the pattern fields before
PEFT sees the config (`lmdock.common.adapter_config`), on the market and on the client
(issue 14, item 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lmdock.client.connection import MarketClient
from lmdock.server.auth import AccessPolicy

from tests.helpers import adapter_variant, make_adapter
from tests.market_helpers import TINY_BERT, running_market
from tests.test_upload_checks import package, rejected

EVIL = "(.|.)*Z"  # exponential backtracking against a long module name with no Z
CASES = {
    "regex target_modules": ({"target_modules": EVIL}, "target_modules must be a list"),
    "float target_modules": ({"target_modules": [1.5]}, "target_modules must be a list"),
    "pattern inside a list": ({"target_modules": ["query", EVIL]}, "target_modules must be a list"),
    "too many names": ({"target_modules": ["query"] * 65}, "target_modules must be a list of 1-64"),
    "regex modules_to_save": ({"modules_to_save": EVIL}, "modules_to_save must be a list"),
    "layers_pattern": ({"layers_pattern": EVIL}, "layers_pattern is not accepted"),
    "rank_pattern": ({"rank_pattern": {EVIL: 8}}, "rank_pattern is not accepted"),
    "alpha_pattern": ({"alpha_pattern": {EVIL: 8}}, "alpha_pattern is not accepted"),
}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_adapter(tiny_bert, tmp_path_factory.mktemp("adapter") / "a", base_name=TINY_BERT)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, profile):
    root = tmp_path_factory.mktemp("market")
    with running_market(
        root, profile, base_models={TINY_BERT: tiny_bert}, access=AccessPolicy.open_demo()
    ) as running:
        yield running


@pytest.mark.parametrize("case", sorted(CASES))
def test_pattern_fields_are_refused_before_peft_runs_them(
    case: str, market, adapter: Path, tmp_path: Path, profile
) -> None:
    config, message = CASES[case]
    hostile = adapter_variant(adapter, tmp_path / "hostile", config=config)
    outcome = rejected(market, package(tmp_path, hostile, profile))
    assert outcome.startswith("INVALID_ARGUMENT") and message in outcome, outcome
    with MarketClient(market.address) as client:  # and the market still answers
        assert client.list() == []


def test_a_client_refuses_to_unpack_such_a_package_too(adapter: Path, tmp_path: Path, profile) -> None:
    """A market that let one through (or a file from elsewhere) still never reaches PEFT."""
    from lmdock.common.errors import InvalidArgument
    from lmdock.common.package_reader import unpack_package

    hostile = adapter_variant(adapter, tmp_path / "hostile", config={"target_modules": EVIL})
    with pytest.raises(InvalidArgument, match="target_modules must be a list"):
        unpack_package(package(tmp_path, hostile, profile), tmp_path / "cache" / "lw")
    assert not (tmp_path / "cache" / "lw").exists()
