"""The daemon's TOML config: defaults, validation with clear errors, JSON round trip."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lmdock.client.daemon.config import DaemonConfig, load_config, parse_size
from lmdock.common.errors import InvalidArgument

DOCS = Path(__file__).parent.parent / "docs" / "daemon.md"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lmdock.toml"
    path.write_text(text)
    return path


def test_the_documented_example_loads_and_round_trips(tmp_path: Path) -> None:
    example = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert example is not None, "docs/daemon.md must hold a complete ```toml example"
    config = load_config(_write(tmp_path, example.group(1)))
    assert config.api.http.startswith("127.0.0.1:") and config.tasks
    again = DaemonConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_defaults_and_derived_paths(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, '[cache]\ndir = "c"\n'))
    assert config.cache_dir == tmp_path / "c"  # relative to the config file
    assert config.state_dir == tmp_path / "c" / "daemon"
    assert config.token_file == config.state_dir / "api-token"
    assert config.ledger_path == tmp_path / "c" / "ledger.jsonl"
    assert config.api.http == "127.0.0.1:8421" and config.runtime.device == "auto"
    assert config.cache.max_bytes == 20 * 2**30


def test_tasks_and_sizes(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            '[cache]\nmax_bytes = "1.5GiB"\n'
            '[[tasks]]\nname = "triage"\ndata = "q.csv"\ntext_column = "note"\n',
        )
    )
    assert config.cache.max_bytes == int(1.5 * 2**30)
    (task,) = config.tasks
    assert (task.name, task.data, task.text_column) == ("triage", str(tmp_path / "q.csv"), "note")
    assert parse_size("500 MB", where="x") == 500 * 10**6 and parse_size(4096, where="x") == 4096


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[market]\nadress = 'x:1'\n", "unknown key(s) ['adress'] in [market]"),
        ("[markt]\n", "unknown table(s) ['markt']"),
        ("[api]\nhttp = '0.0.0.0:8421'\n", "can be reached from other machines"),
        ("[api]\nhttp = 'localhost'\n", "must look like 127.0.0.1:8421"),
        ("[runtime]\ndevice = 'tpu'\n", "runtime.device must be auto, cpu, mps or cuda[:N]"),
        ("[runtime]\ndtype = 'int8'\n", "runtime.dtype must be one of"),
        ("[runtime]\nmax_batch_size = '8'\n", "runtime.max_batch_size must be an integer"),
        ("[cache]\nmax_bytes = 'lots'\n", "cache.max_bytes must be a size such as 20GiB"),
        ("[privacy]\nepsilon = 5.0\nbudget_epsilon = 2.0\n", "must fit in the budget per dataset"),
        ("[market]\nclient_cert = 'c.pem'\n", "client_cert and market.client_key go together"),
        ("[market]\ntls_pin_sha256 = 'abc'\n", "must be a sha256 in hex"),
        ("[market]\ntls_server_name = 'market'\n", "tls_server_name needs TLS"),
        ("[[tasks]]\nname = 'Bad Name'\ndata = 'x'\n", "task name 'Bad Name' must be"),
        # the whole name must match: a trailing newline would end a log line early
        ("[[tasks]]\nname = \"triage\\n\"\ndata = 'x'\n", "task name 'triage\\n' must be"),
        ("[[tasks]]\nname = 'a'\n", "needs a data file"),
        ("[[tasks]]\nname = 'a'\ndata = 'x'\n[[tasks]]\nname = 'a'\ndata = 'y'\n", "named twice: a"),
        ("tasks = 3\n", "array of tables"),
        ("[daemon\n", "is not valid TOML"),
    ],
)
def test_bad_configs_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)) as caught:
        load_config(_write(tmp_path, text))
    assert str(tmp_path / "lmdock.toml") in str(caught.value)


def test_remote_listening_needs_an_explicit_yes(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "[api]\nhttp = '0.0.0.0:8421'\nallow_remote = true\n"))
    assert config.api.http == "0.0.0.0:8421"


def test_a_missing_config_points_to_the_docs(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"docs/daemon\.md"):
        load_config(tmp_path / "nope.toml")
