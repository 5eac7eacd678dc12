"""Flower's ServerApp and ClientApps in one process: a `Grid` whose nodes are local sites.

Flower's simulation engine runs each ClientApp in a Ray actor; starting Ray and importing
torch in its workers costs about 25 s on 2 cores before the first message (measured with a
trivial app, flwr 1.42 + ray 2.55). `LocalGrid` keeps every other part of Flower: the
ServerApp (its strategy or workflow: `FedAvg`, `SecAggPlusWorkflow`), the ClientApp with its
mods (`secaggplus_mod`), `Message`/`RecordDict` and one persistent `Context` per node, as a
SuperNode keeps it. It implements Flower's abstract `Grid` (flwr.serverapp.Grid) the way the
SuperLink's in-memory grid does, and every message, both ways, crosses as Flower's protobuf
wire form (`flwr.common.serde`), so only what the wire can carry reaches the other side. A
ClientApp that raises answers with an error reply, as a SuperNode does (the ServerApp sees
`Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=...)`); the reason is the exception's text, so
lmdock's typed errors reach the server as their message and never as a traceback.

Deployment runs the same ServerApp and ClientApp under a real SuperLink and one SuperNode per
site (docs/federated.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["LocalGrid", "Node", "run_local"]

log = logging.getLogger(__name__)

#: The first node id (a SuperLink numbers its nodes; 1 is the SuperLink itself).
FIRST_NODE_ID = 1001


@dataclass
class Node:
    """One site as a SuperNode holds it: its node id, its ClientApp and its Context."""

    node_id: int
    app: ClientApp
    context: Context
    #: After this many messages the node stops answering (a dropout, in tests); None: it never does.
    drop_after: int | None = None
    seen: int = field(default=0)


def _wire(message: Message, **metadata: object) -> Message:
    """`message` as it arrives after Flower's wire encoding, with the link's metadata set."""
    proto = message_to_proto(message)
    for name, value in metadata.items():
        setattr(proto.metadata, name, value)
    return message_from_proto(proto)


class LocalGrid(Grid):
    """Flower's Grid over ClientApps in this process, answered one after another."""

    def __init__(self, nodes: Iterable[Node], *, run_id: int = 1) -> None:
        self._nodes = {n.node_id: n for n in nodes}
        self._run = Run.create_empty(run_id)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("LocalGrid answers each message at once: use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("LocalGrid answers each message at once: use send_and_receive")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for message in messages:
            node = self._nodes.get(message.metadata.dst_node_id)
            if node is None:
                continue  # no such node: no reply, as on a SuperLink
            node.seen += 1
            if node.drop_after is not None and node.seen > node.drop_after:
                continue  # the site dropped out: the ServerApp sees no reply
            sent = _wire(
                message,
                run_id=self._run.run_id,
                message_id=uuid4().hex,
                src_node_id=SUPERLINK_NODE_ID,
                created_at=time.time(),
            )
            replies.append(_wire(self._answer(node, sent), message_id=uuid4().hex))
        return replies

    @staticmethod
    def _answer(node: Node, message: Message) -> Message:
        try:
            return node.app(message, node.context)
        except Exception as exc:  # a SuperNode answers with an error reply, never a crash
            log.warning(
                "site node %d refused a %s message: %s", node.node_id, message.metadata.message_type, exc
            )
            reason = f"{type(exc).__name__}: {exc}"
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)


def run_local(
    server: ServerApp,
    client: ClientApp,
    sites: Mapping[str, Mapping[str, str | int | float | bool]],
    *,
    run_config: Mapping[str, str | int | float | bool] | None = None,
    drop_after: Mapping[str, int] | None = None,
) -> Context:
    """Run `server` against one node per site (its `node_config` as given), in this process;
    return the ServerApp's context (its `state` holds what the ServerApp left there)."""
    nodes = [
        Node(
            node_id=FIRST_NODE_ID + i,
            app=client,
            context=Context(
                run_id=1,
                node_id=FIRST_NODE_ID + i,
                node_config=dict(config),
                state=RecordDict(),
                run_config={},
            ),
            drop_after=(drop_after or {}).get(name),
        )
        for i, (name, config) in enumerate(sites.items())
    ]
    # the process's task identity, as Flower's simulation sets it for its in-process ServerApp
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config or {})
    )
    server(LocalGrid(nodes), context)
    return context
