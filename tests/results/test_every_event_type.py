"""Every event type of the core's union, walked through each reader of the log.

Lists of event types copied by hand drift: the metrics once lacked ``deleted``, so deletes were
never counted. Each reader derives its list from ``EVENT_CLASSES``; this walk makes a work live
every event type in a real log, then asks display, projection, metrics and the audit about each.
A new event type that any of them forgets fails here at once.
"""

from __future__ import annotations

import asyncio
import time

from conftest import eventually, finish
from workflow.core import events as ev
from workflow.core.display import describe
from workflow.core.errors import NotFoundError
from workflow.core.fold import fold
from workflow.core.work import Work
from workflow.results.metrics import EventCounts


async def _live_every_event_type(client) -> list[str]:
    """Works whose histories hold, together, one event of each type; their ids."""
    succeeded, failed, cancelled = await client.deposit(
        [Work(pipeline="alpha", priority=5), Work(pipeline="alpha", priority=4), Work(pipeline="alpha", priority=1)]
    )
    await finish(client, succeeded, ok=True)  # Deposited, Started, Succeeded
    await finish(client, failed, ok=False)  # Started, Failed
    await client.requeue(failed, reason="by hand")  # Requeued
    await client.cancel(cancelled, reason="not needed")  # Cancelled
    head = await client.head(cancelled)  # Notified: as the server's notifier records it, under the CAS
    await client.append(ev.Notified(work_id=cancelled, pipeline="alpha", time=time.time(), status="cancelled",
                                    ok=True, attempts=1, reply={"slack:C1": {"ok": True}}), head.seq)
    await client.delete(succeeded, reason="cleanup")  # Deleted
    return [succeeded, failed, cancelled]


async def _stream_messages(client, count: int) -> list[tuple[str, bytes, int]]:
    """The first ``count`` messages of the log: subject, payload, stream sequence."""
    messages: list[tuple[str, bytes, int]] = []
    done = asyncio.Event()

    async def collect(msg) -> None:
        messages.append((msg.subject, msg.data, msg.metadata.sequence.stream))
        if len(messages) >= count:
            done.set()

    subscription = await client.nc.jetstream().subscribe("wf.>", cb=collect, ordered_consumer=True)
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await subscription.unsubscribe()
    return messages


async def test_every_event_type_is_described_projected_counted_and_audited(client, results_service):
    ids = await _live_every_event_type(client)
    histories = {work_id: await client.history(work_id) for work_id in ids}
    seen = {type(event) for history in histories.values() for event in history}
    assert seen == set(ev.EVENT_CLASSES), f"the walk misses {set(ev.EVENT_CLASSES) - seen}: extend it"

    # display: every event reads as a sentence of its own
    for history in histories.values():
        for event in history:
            line = describe(event)
            assert isinstance(line, str) and line.strip(), event

    # projection: the read model says of each work what the fold of its history says
    async def projected_as_folded() -> bool:
        try:
            for work_id, history in histories.items():
                if (await client.results.get(work_id)).status != fold(history).status:
                    return False
        except NotFoundError:  # not projected yet
            return False
        return True

    await eventually(projected_as_folded, timeout=30)

    # metrics: every event type is counted (workflow_works_total)
    total = sum(len(history) for history in histories.values())
    counts = EventCounts()
    for subject, data, seq in await _stream_messages(client, total):
        counts.add(subject, data, seq)
    counted = {event for (_pipeline, event, _reason) in counts.counts}
    assert counted == set(ev.EVENT_TYPES), f"not counted: {set(ev.EVENT_TYPES) - counted}"
    assert sum(counts.counts.values()) == total

    # audit: the log against the read model, no anomaly for any event type
    answer = await client.results.audit()
    assert answer["total"] == 0, answer
