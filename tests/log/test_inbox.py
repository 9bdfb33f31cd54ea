"""Inboxes read in turn, against a real nats-server: a connection's close never waits on
what nobody read (nats-py's drain would wait 30 s for a subscription made without a
callback)."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

import workflow
from workflow import Work
from workflow.log.connection import connect
from workflow.log.inbox import Inbox

#: Far below nats-py's drain_timeout (30 s), far above a close's few milliseconds.
CLOSES_WITHIN = 10


async def closes_in_time(closing) -> bool:
    """Whether ``closing`` (a close or a drain) ends within :data:`CLOSES_WITHIN`; not
    ``wait_for``, which would cancel it, and nats-py's drain swallows a cancel."""
    task = asyncio.ensure_future(closing)
    done, _ = await asyncio.wait({task}, timeout=CLOSES_WITHIN)
    if not done:
        await task  # let it end (at drain_timeout) before the test's server stops
    return bool(done)


@pytest.fixture
async def nc(nats_server):
    connection = await connect(nats_server.url)
    yield connection
    if not connection.is_closed:
        await connection.close()


async def test_messages_are_read_in_the_order_they_came(nc) -> None:
    inbox = await Inbox.open(nc, nc.new_inbox())
    for n in range(5):
        await nc.publish(inbox.subject, str(n).encode())
    assert [(await inbox.next(timeout=5)).data for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    await inbox.close()


async def test_next_raises_nats_timeout_when_nothing_comes(nc) -> None:
    inbox = await Inbox.open(nc, nc.new_inbox())
    with pytest.raises(nats.errors.TimeoutError):
        await inbox.next(timeout=0.2)
    await inbox.close()


async def test_a_connection_with_unread_messages_in_an_inbox_drains_at_once(nc) -> None:
    inbox = await Inbox.open(nc, nc.new_inbox())
    for n in range(3):
        await nc.publish(inbox.subject, str(n).encode())
    assert (await inbox.next(timeout=5)).data == b"0"  # the other two are never read
    assert await closes_in_time(nc.drain())
    assert nc.is_closed


async def test_a_client_closes_at_once_after_a_history_read_is_cancelled_midway(nats_url) -> None:
    async with workflow.connect(nats_url) as depositor:
        [work_id] = await depositor.deposit(Work(pipeline="alpha"))
    for attempt in range(8):  # the read is cut at a different point each time
        client = workflow.connect(nats_url)
        await client.open()
        read = asyncio.create_task(client.history_records(work_id))
        for _ in range(attempt):
            await asyncio.sleep(0)
        read.cancel()
        assert await closes_in_time(client.close()), f"close waited on the read cut after {attempt} steps"
