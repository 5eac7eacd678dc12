"""Small parts of the daemon: the OpenAI request parser, JSON depth, the task registry, the API token."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lmdock.client.answers import Classification, GenerationOptions
from lmdock.client.daemon import local_serde as serde
from lmdock.client.daemon.auth import bearer_matches, load_or_create_token, read_token
from lmdock.client.daemon.config import TaskSettings
from lmdock.client.daemon.json_body import nesting_depth
from lmdock.client.daemon.openai_fields import CHAT, COMPLETIONS
from lmdock.client.daemon.openai_schema import parse_chat, parse_completion
from lmdock.client.daemon.registry import TaskRecord, TaskRegistry
from lmdock.client.daemon.types import Completion, DaemonStatus, LoadedBase
from lmdock.common.errors import AlreadyExists, FailedPrecondition, IntegrityError, InvalidArgument, NotFound
from lmdock.v1 import local_pb2 as pb


def test_completion_requests_parse_with_openai_defaults() -> None:
    model, prompts, options, stream = parse_completion({"model": "m", "prompt": "hi", "user": "ignored"})
    assert (model, prompts, stream.on) == ("m", ["hi"], False)
    assert (options.max_new_tokens, options.temperature, options.top_p, options.stop) == (16, 0.0, 1.0, ())
    _, _, options, stream = parse_completion(
        {
            "model": "m",
            "prompt": ["a", "b"],
            "max_tokens": 5,
            "temperature": 0.7,
            "stop": "\n",
            "stream": True,
        }
    )
    assert (options.max_new_tokens, options.temperature, options.stop, stream.on) == (5, 0.7, ("\n",), True)


def test_chat_requests_take_text_parts() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
        "max_completion_tokens": 7,
    }
    model, messages, options, _ = parse_chat(body, default_max_tokens=99)
    assert model == "m"
    assert [(m.role, m.content) for m in messages] == [("system", "be brief"), ("user", "a\nb")]
    assert options.max_new_tokens == 7
    assert (
        parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]}, 99)[2].max_new_tokens == 99
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x"}, '"model" is required'),
        ({"model": "m", "prompt": [1, 2]}, "token arrays are not supported"),
        ({"model": "m", "prompt": ""}, '"prompt" must be a non-empty string'),
        ({"model": "m", "prompt": "x", "n": 2}, '"n" must be 1'),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, '"max_tokens" must be a positive integer'),
        ({"model": "m", "prompt": "x", "temperature": 3}, '"temperature" must be a number between 0 and 2'),
        ({"model": "m", "prompt": "x", "top_p": 0}, '"top_p" must be a number'),
        ({"model": "m", "prompt": "x", "stop": ["a"] * 5}, '"stop" must be a string or a list of at most 4'),
        ({"model": "m", "prompt": "x", "stream": "yes"}, '"stream" must be true or false'),
    ],
)
def test_bad_completion_requests(body: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        parse_completion(body)


def test_bad_chat_requests() -> None:
    with pytest.raises(InvalidArgument, match='"messages" must be a non-empty list'):
        parse_chat({"model": "m", "messages": []}, 9)
    with pytest.raises(InvalidArgument, match="only text parts are supported"):
        parse_chat({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 9)


def test_the_docs_field_table_is_the_one_the_parser_applies() -> None:
    page = (Path(__file__).parents[1] / "docs" / "daemon.md").read_text()
    rows = {
        m[1]: (m[2], m[3]) for m in re.finditer(r"^\| `(\w+)` \| (\S+)[^|]* \| (\S+)[^|]* \|$", page, re.M)
    }
    for column, table in enumerate((CHAT, COMPLETIONS)):
        for name in set(rows) | set(table):
            policy = table.get(name, "—")
            assert rows[name][column] == (policy if isinstance(policy, str) else "refused"), name


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"top_k": 3}, "top_k"),
        ({"messages": [{"role": "assistant", "content": "", "tool_calls": [{}]}]}, "messages[0].tool_calls"),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ],
)
def test_refused_chat_fields_are_named(body: dict, param: str) -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]} | body
    with pytest.raises(InvalidArgument) as refused:
        parse_chat(chat, 9)
    assert refused.value.param == param


def test_fields_that_ask_for_nothing_are_accepted() -> None:
    off = {"tools": [], "tool_choice": "none", "logprobs": False, "presence_penalty": 0.0, "logit_bias": {}}
    chat = {"model": "m", "messages": [{"role": "user", "content": "x", "name": "ann"}], "store": True}
    _, _, options, streaming = parse_chat(chat | off | {"stream": True, "stream_options": {}}, 9)
    assert options.fit and not streaming.include_usage and streaming.on
    nulls = {"n": None, "stream": None, "stop": None, "temperature": None, "suffix": None}
    _, _, options, streaming = parse_completion(
        {"model": "m", "prompt": "x", "echo": False, "best_of": 1} | nulls
    )
    assert options.fit and options.max_new_tokens == 16 and not streaming.on
    _, _, options, _ = parse_completion({"model": "m", "prompt": "x", "max_tokens": 3})
    assert options.max_new_tokens == 3 and not options.fit


def test_registry_persists_and_refuses_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    registry = TaskRegistry(path)
    registry.add(TaskSettings(name="triage", data="/d.csv", text_column="note"))
    registry.update("triage", state="ready", learnware_id="lw", matches=(("lw", 0.9),), epsilon_spent=1.0)
    with pytest.raises(AlreadyExists, match="--replace"):
        registry.add(TaskSettings(name="triage", data="/other.csv"))
    again = TaskRegistry(path).get("triage")
    assert (again.state, again.learnware_id, again.matches, again.settings.text_column) == (
        "ready",
        "lw",
        (("lw", 0.9),),
        "note",
    )
    assert json.loads(path.read_text())["tasks"][0]["name"] == "triage"
    with pytest.raises(NotFound, match="no task named 'nope'"):
        registry.get("nope")
    path.write_text("{broken")
    with pytest.raises(IntegrityError, match="is damaged"):
        TaskRegistry(path)


def test_the_token_is_private_and_compared_exactly(tmp_path: Path) -> None:
    path = tmp_path / "state" / "api-token"
    token = load_or_create_token(path)
    assert len(token) >= 32 and os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_token(path) == token  # kept across starts
    assert bearer_matches(f"Bearer {token}", token)
    assert not bearer_matches(f"Bearer {token}x", token) and not bearer_matches(token, token)
    assert not bearer_matches(None, token)
    path.chmod(0o644)
    with pytest.raises(FailedPrecondition, match="chmod 600"):
        read_token(path)


def test_task_settings_cross_the_local_api_with_defaults_for_unset_fields() -> None:
    settings = TaskSettings(name="b", data="/y.csv", format="csv", text_column="note", top_k=3, epsilon=0.5)
    assert serde.settings_from_pb(serde.settings_to_pb(settings)) == settings
    assert serde.settings_from_pb(pb.TaskSource(name="a", data="/x.csv")) == TaskSettings(
        name="a", data="/x.csv"
    )
    with pytest.raises(InvalidArgument, match="task name '' must be"):
        serde.settings_from_pb(pb.TaskSource(data="/x.csv"))


def test_records_round_trip_through_the_local_api() -> None:
    record = TaskRecord(
        settings=TaskSettings(name="t", data="/d.jsonl", top_k=3),
        state="ready",
        learnware_id="lw",
        kind="classification",
        labels=("a", "b"),
        base_model="base",
        publisher="pub",
        records=120,
        matches=(("lw", 0.75), ("other", 0.5)),
        epsilon_spent=1.0,
        delta_spent=1e-6,
        bytes_sent=1616,
        updated_at=1234.5,
    )
    assert serde.task_from_pb(serde.task_to_pb(record)) == record
    answer = Completion("t", "lw", "classification", (Classification("a", {"a": 0.75, "b": 0.25}),), 7, 0)
    assert serde.completion_from_pb(serde.completion_to_pb(answer)) == answer
    status = DaemonStatus(
        pid=1,
        started_at=2.5,
        market="m:1",
        http_address="127.0.0.1:1",
        grpc_address="127.0.0.1:2",
        cache_dir="/c",
        cache_bytes=10,
        cache_max_bytes=20,
        cached_learnwares=1,
        repairs=0,
        tasks=(record,),
        loaded=(LoadedBase("base", "classification", "cpu", "float32", ("lw",), 3),),
    )
    assert serde.status_from_pb(serde.status_to_pb(status)) == status
    options = GenerationOptions(max_new_tokens=9, temperature=0.5, top_p=0.5, stop=("\n",))
    assert serde.options_from_pb(serde.options_to_pb(options), default_max_tokens=1) == options


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"ab'), inner, max_size=3)
    ),
    max_leaves=20,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@given(_JSON)
def test_nesting_depth_counts_brackets_outside_strings(value: object) -> None:
    assert nesting_depth(json.dumps(value).encode()) == _depth(value)
