"""The on-prem daemon: `lmdock daemon`, `lmdock status` and `lmdock task add|list|show|remove|retry`.

`daemon` runs in the foreground until SIGTERM or Ctrl-C; the other commands find the running
daemon through the config (its run file and token) and talk to its local gRPC API.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from lmdock.client.commands.common import add_json
from lmdock.common.errors import Unavailable
from lmdock.common.exit_codes import exit_code

__all__ = ["register"]

NOT_RUNNING_EXIT = exit_code(Unavailable())  # what every command exits with when no daemon answers


def _config(args: argparse.Namespace) -> Any:
    from lmdock.client.daemon.config import load_config

    return load_config(Path(args.config).expanduser())


def _client(args: argparse.Namespace) -> Any:
    from lmdock.client.daemon.local_client import LocalClient

    return LocalClient.for_config(_config(args), config_hint=args.config)


# -- lmdock daemon ------------------------------------------------------------------------------


def _daemon(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json

    config = _config(args)
    if args.check:
        if args.json:
            emit_json(config.to_dict())
        else:
            print(f"{args.config}: valid; {len(config.tasks)} task(s); state in {config.state_dir}")
        return 0
    from lmdock.client.daemon.runfile import hold_lock

    hold_lock(config.state_dir).close()  # a second daemon is refused before torch loads (serve locks again)
    from lmdock.client.daemon.app import serve

    return serve(config, as_json=args.json)


# -- lmdock status ------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json, table

    try:
        with _client(args) as client:
            status = client.status()
    except Unavailable as exc:
        if args.json:
            emit_json({"running": False, "reason": str(exc)})
        else:
            print(f"lmdock: {exc}", file=sys.stderr)
        return NOT_RUNNING_EXIT
    if args.json:
        emit_json({"running": True} | _status_dict(status))
        return 0
    from lmdock.client.progress import duration

    uptime = duration(time.time() - status.started_at)
    print(f"lmdock daemon running (pid {status.pid}, up {uptime})")
    http = f"http://{status.http_address}/v1" if status.http_address else "off"
    print(f"  OpenAI-compatible API  {http}")
    print(f"  local gRPC API         {status.grpc_address}")
    print(f"  market                 {status.market or '(none: cached learnwares only)'}")
    print(
        f"  cache                  {_size(status.cache_bytes)} of {_size(status.cache_max_bytes)} "
        f"({status.cached_learnwares} learnware(s)) in {status.cache_dir}"
    )
    if status.repairs:
        print(f"  repaired               {status.repairs} damaged cache entr(y/ies) re-downloaded")
    print()
    print(_task_table(status.tasks))
    if status.loaded:
        print()
        rows = [
            (b.base_model, b.kind, b.device, b.dtype, ", ".join(b.learnwares), b.batches_run)
            for b in status.loaded
        ]
        print(table(["base model in memory", "kind", "device", "dtype", "learnwares", "batches"], rows))
    return 0


def _status_dict(status: Any) -> dict[str, Any]:
    import dataclasses

    data = dataclasses.asdict(status)
    data["tasks"] = [t.to_dict() for t in status.tasks]
    return data


def _task_table(tasks: Any) -> str:
    from lmdock.client.commands.output import table

    if not tasks:
        return "no tasks yet: add one with `lmdock task add NAME --data FILE`"
    rows = []
    for t in tasks:
        state = f"{t.state} ({t.stage})" if t.stage else t.state
        spent = f"{t.epsilon_spent:g}" if t.epsilon_spent else "-"
        rows.append((t.name, state, t.learnware_id or "-", t.kind or "-", t.records or "-", spent))
    return table(["task (model name)", "state", "learnware", "kind", "records", "epsilon spent"], rows)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError


# -- lmdock task ----------------------------------------------------------------------------------


class _StageProgress:
    """Prints each stage once and draws a bar for embedding and downloading (on a terminal)."""

    MESSAGES: ClassVar[dict[str, str]] = {
        "reading": "reading the task data",
        "embedding": "embedding the texts locally",
        "searching": "searching the market (only the private spec is sent)",
        "downloading": "downloading and verifying the learnware",
    }

    def __init__(self, enabled: bool) -> None:
        from lmdock.client.commands.output import progress_bar

        self.enabled = enabled
        self.stage = ""
        self.bars = {s: progress_bar(s, enabled=enabled) for s in ("embedding", "downloading")}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.stage = stage
            drawn = stage in self.bars and sys.stderr.isatty()  # the bar names the stage itself
            if stage in self.MESSAGES and not drawn:
                print(self.MESSAGES[stage], file=sys.stderr)
        if stage in self.bars and total:
            self.bars[stage](done, total)


def _settings(args: argparse.Namespace) -> Any:
    from lmdock.client.daemon.config import TaskSettings

    data = str(Path(args.data).expanduser().resolve()) if args.data else ""
    return TaskSettings(
        name=args.name,
        data=data,
        format=args.format,
        text_column=args.text_column,
        label_column=args.label_column,
        answer_column=args.answer_column,
        person_column=args.person_column,
        epsilon=args.epsilon or 0.0,
        delta=args.delta or 0.0,
        top_k=args.top_k,
        learnware=args.learnware,
    )


def _print_task(record: Any, as_json: bool, *, http: str = "") -> None:
    from lmdock.client.commands.output import emit_json

    if as_json:
        emit_json(record.to_dict())
        return
    if record.state != "ready":
        print(f"task {record.name}: {record.state}{': ' + record.error if record.error else ''}")
        return
    privacy = (
        f"privacy spent: epsilon={record.epsilon_spent:g}, delta={record.delta_spent:g} "
        f"on {record.records} records"
        if record.epsilon_spent
        else "no privacy spent (pinned learnware, no search)"
    )
    if record.budget_spent:
        privacy += (
            f"; this data set has spent epsilon={record.budget_spent:.3g} "
            f"(delta={record.budget_delta:g}) in all"
        )
    privacy += f"; {record.bytes_sent} bytes sent to the market (no text, no embeddings)"
    print(
        f"task {record.name} is ready: learnware {record.learnware_id} ({record.kind}) by {record.publisher}"
    )
    print(f"  {privacy}")
    if record.matches:
        ranked = ", ".join(i for i, _ in record.matches[:5])  # the 0-1 score neither ranks nor reads well
        print(f"  market ranking (best first): {ranked}")
    where = f"http://{http}/v1" if http else "the daemon's HTTP API"
    print(f'  apps call it as model "{record.name}" at {where}')


def _task_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _client(args) as client:
        record = client.add_task(settings, replace=args.replace, progress=_StageProgress(not args.json))
        http = client.http_address
    _print_task(record, args.json, http=http)
    return 0


def _task_retry(args: argparse.Namespace) -> int:
    with _client(args) as client:
        record = client.retry_task(args.name, progress=_StageProgress(not args.json))
        http = client.http_address
    _print_task(record, args.json, http=http)
    return 0


def _task_list(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json

    with _client(args) as client:
        tasks = client.tasks()
    if args.json:
        emit_json([t.to_dict() for t in tasks])
    else:
        print(_task_table(tasks))
    return 0


def _task_show(args: argparse.Namespace) -> int:
    from lmdock.common.errors import NotFound

    with _client(args) as client:
        matches = [t for t in client.tasks() if t.name == args.name]
        http = client.http_address
    if not matches:
        raise NotFound(f"no task named {args.name!r}; `lmdock task list` shows the tasks")
    _print_task(matches[0], args.json, http=http)
    return 0


def _task_remove(args: argparse.Namespace) -> int:
    from lmdock.client.commands.output import emit_json

    with _client(args) as client:
        record = client.remove_task(args.name)
    if args.json:
        emit_json(record.to_dict())
    else:
        print(f"removed task {record.name}; its learnware stays cached until evicted")
    return 0


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=os.environ.get("LMDOCK_CONFIG", "lmdock.toml"),
        help="daemon config file (default $LMDOCK_CONFIG, else ./lmdock.toml)",
    )
    add_json(p)


def register(sub: Any) -> None:
    p = sub.add_parser("daemon", help="run the on-prem daemon: tasks, cache and local OpenAI-compatible API")
    _add_config(p)
    p.add_argument("--check", action="store_true", help="validate the config and print it; do not start")
    p.set_defaults(func=_daemon)

    p = sub.add_parser("status", help="show the running daemon: APIs, tasks, cache, models in memory")
    _add_config(p)
    p.set_defaults(func=_status)

    task = sub.add_parser("task", help="manage the daemon's tasks").add_subparsers(
        dest="task_command", required=True
    )
    p = task.add_parser("add", help="register a task: private spec, search, pull; then serve it")
    _add_config(p)
    p.add_argument("name", help="task name; apps use it as the model name")
    p.add_argument("--data", help="task data: JSONL, CSV/TSV (with a header) or text (one record per line)")
    p.add_argument("--format", default="auto", choices=["auto", "jsonl", "csv", "tsv", "text"])
    p.add_argument("--text-column", default="text", help="CSV column holding the text (default: text)")
    p.add_argument("--label-column", default="", help="CSV column holding gold labels (optional)")
    p.add_argument("--answer-column", default="", help="CSV column holding gold answers (optional)")
    p.add_argument(
        "--person-column", default="", help="CSV column naming each record's person: the privacy unit"
    )
    p.add_argument("--epsilon", type=float, help="privacy budget of the search (default: privacy.epsilon)")
    p.add_argument("--delta", type=float, help="delta of the search (default: privacy.delta)")
    p.add_argument("--top-k", type=int, default=5, help="learnwares to rank (the best is pulled)")
    p.add_argument("--learnware", default="", help="pin this learnware id: no search, no privacy spent")
    p.add_argument("--replace", action="store_true", help="replace a task of the same name")
    p.set_defaults(func=_task_add)

    for name, handler, text in (
        ("show", _task_show, "show one task"),
        ("remove", _task_remove, "stop serving a task"),
        ("retry", _task_retry, "prepare a failed task again"),
    ):
        p = task.add_parser(name, help=text)
        _add_config(p)
        p.add_argument("name")
        p.set_defaults(func=handler)

    p = task.add_parser("list", help="list the tasks and their states")
    _add_config(p)
    p.set_defaults(func=_task_list)
