"""The taskiq side of ``benchmarks/peers.py``: taskiq-nats's JetStream pull broker and the no-op task.

taskiq records nothing by default: with no result backend a finished task leaves no trace
but its JetStream ack. To see "all N have run" without a store, every task announces its own
end: a middleware's ``post_save`` hook (run after the task returned and its result, if any,
was saved; before the ack) publishes the task's id on the core NATS subject ``DONE_SUBJECT``
through the worker's own broker connection. ``peers.py`` subscribes to it and counts distinct
ids: a lost announcement can only make a round time out, never finish early, and a redelivered
task is counted once.

``make_broker`` builds the broker for a worker (``taskiq worker peers_taskiq:broker``, which
reads ``PEERS_NATS_URL``, ``PEERS_TASKIQ_RESULTS`` and ``PEERS_TASKIQ_BATCH`` from the
environment) and for the benchmark's own kicking client alike.
"""

from __future__ import annotations

import os
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

DONE_SUBJECT = "peers.taskiq.done"


async def add(a: int, b: int) -> int:
    """The task: a no-op that returns a + b (``async``: taskiq runs a plain ``def`` in a thread pool)."""
    return a + b


class AnnounceDone(TaskiqMiddleware):
    """Publish each finished task's id on ``DONE_SUBJECT`` (core NATS, fire and forget)."""

    def __init__(self, broker: PullBasedJetStreamBroker) -> None:
        super().__init__()
        self.nats = broker.client  # the broker's own connection: no second one per worker

    async def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        await self.nats.publish(DONE_SUBJECT, message.task_id.encode())


def make_broker(url: str, results: bool, batch: int = 1) -> tuple[PullBasedJetStreamBroker, Any]:
    """A pull-based JetStream broker on ``url`` with taskiq-nats's defaults (stream
    ``taskiq_jetstream``, subject ``taskiq_tasks``, durable ``taskiq_durable``), ``batch``
    messages per fetch (taskiq-nats's default is 1), and with ``results`` the NATS object-store
    result backend. Returns (broker, the registered ``add`` task)."""
    broker = PullBasedJetStreamBroker(servers=url, pull_consume_batch=batch)
    if results:
        broker = broker.with_result_backend(NATSObjectStoreResultBackend(servers=url))
    broker.add_middlewares(AnnounceDone(broker))
    return broker, broker.register_task(add, task_name="add")


broker, add_task = make_broker(
    os.environ.get("PEERS_NATS_URL", "nats://127.0.0.1:4222"),
    results=bool(os.environ.get("PEERS_TASKIQ_RESULTS")),
    batch=int(os.environ.get("PEERS_TASKIQ_BATCH", "1")),
)
