"""The worker in this process (thread isolation) against a real nats-server: the loop's
promises that need no crash to show: timeouts without killing, lives, sleep, waking."""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest

from conftest import eventually
from workflow import Work
from workflow.core import events as ev
from workflow.worker import intake
from workflow.worker.loop import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(60)


SLEEP = 300  # the workers' --sleep: a test that finishes inside its timeout never slept through it


def worker(url: str, **options) -> Worker:
    return Worker(WorkerConfig(**{"pipelines": ["wk"], "isolation": "thread", "sleep": SLEEP, "connect": {"url": url},
                                  **options}))


def long_sleeps(monkeypatch) -> asyncio.Event:
    """Set once a worker's intake starts its long sleep: it found its buckets empty and
    waits up to ``SLEEP`` s, until a deposit (or a signal) wakes it."""
    asleep = asyncio.Event()
    first_of = intake.first_of

    async def watched(*waitables, timeout=None):
        if timeout == SLEEP:
            asleep.set()
        return await first_of(*waitables, timeout=timeout)

    monkeypatch.setattr(intake, "first_of", watched)
    return asleep


async def status_of(client, work_id: str, status: str) -> bool:
    return (await client.get(work_id)).status == status


async def test_a_hung_thread_is_abandoned_at_its_timeout_and_the_worker_goes_on(client, nats_url):
    hung, after = await client.deposit([
        Work(pipeline="wk", function="workflow.examples.sleep", parameters={"seconds": 30}, timeout=1, priority=5,
             retries=0),
        Work(pipeline="wk", function="workflow.examples.add", parameters={"a": 1, "b": 1}, priority=1),
    ])
    assert await worker(nats_url, lives=2).run() == 0
    [failed] = [e for e in await client.history(hung) if isinstance(e, ev.Failed)]
    assert (failed.reason, failed.will_retry) == ("timeout", False)
    assert "its thread could not be killed and was abandoned" in failed.error
    abandoned = [t for t in threading.enumerate() if t.name == "workflow:workflow.examples.sleep"]
    assert abandoned and abandoned[0].is_alive()  # still sleeping: abandoned, not waited for
    assert (await client.get(after)).results == {"value": 2}


async def test_a_worker_with_work_available_never_sleeps_between_works(client, nats_url):
    # --sleep 300: finishing inside the test's 60 s timeout means it never slept.
    ids = await client.deposit([Work(pipeline="wk", parameters={"a": i, "b": 0}) for i in range(4)])
    assert await worker(nats_url, lives=4, function="workflow.examples.add").run() == 0
    assert [(await client.get(i)).results["value"] for i in ids] == [0, 1, 2, 3]


async def test_an_idle_worker_wakes_when_work_is_deposited_and_stops_on_sigterm(client, nats_url, monkeypatch):
    asleep = long_sleeps(monkeypatch)
    idle = worker(nats_url, function="workflow.examples.add", concurrency=2)
    running = asyncio.create_task(idle.run())
    await asyncio.wait_for(asleep.wait(), 20)  # it has found its buckets empty and sleeps (for up to 300 s)
    [work_id] = await client.deposit(Work(pipeline="wk", parameters={"a": 2, "b": 3}))
    await eventually(lambda: status_of(client, work_id, "success"), timeout=20)
    assert (await client.get(work_id)).results == {"value": 5}
    idle.signal(signal.SIGTERM)
    assert await asyncio.wait_for(running, 10) == 0


async def test_a_worker_on_a_pipeline_that_never_had_work_here_says_so(client, nats_url, caplog):
    await client.deposit(Work(pipeline="wk", site="kko"))
    idle = worker(nats_url, pipelines=["wk", "typo-pipeline"], function="workflow.examples.add")
    running = asyncio.create_task(idle.run())

    async def both_warned() -> bool:
        return sum("no work has ever been deposited" in r.getMessage() for r in caplog.records) == 2

    await eventually(both_warned, timeout=20)
    idle.signal(signal.SIGTERM)
    assert await asyncio.wait_for(running, 10) == 0
    warnings = [r.getMessage() for r in caplog.records if "no work has ever been deposited" in r.getMessage()]
    assert any("'typo-pipeline'" in w and "Known pipelines: wk" in w for w in warnings)
    assert any("'wk'" in w and "it has work at: kko" in w for w in warnings)


async def test_a_delivery_held_ready_behind_a_long_work_is_given_back_for_another_worker(client, nats_url):
    long, short = await client.deposit([
        Work(pipeline="wk", function="workflow.examples.sleep", parameters={"seconds": 6}, priority=5),
        Work(pipeline="wk", function="workflow.examples.add", parameters={"a": 1, "b": 1}, priority=1),
    ])
    busy = worker(nats_url)  # one slot, and one delivery fetched ahead of it: the short work
    running = asyncio.create_task(busy.run())
    await eventually(lambda: status_of(client, long, "running"), timeout=20)
    other = worker(nats_url, lives=1)
    assert await asyncio.wait_for(other.run(), 20) == 0  # it got the short one, given back by the busy worker
    assert (await client.get(short)).results == {"value": 2}
    assert (await client.get(long)).status == "running"
    busy.signal(signal.SIGTERM)
    assert await asyncio.wait_for(running, 15) == 0  # the long work finished, nothing else taken
    assert (await client.get(long)).status == "success"


async def test_concurrency_n_runs_n_process_children_at_once(client, nats_url):
    ids = await client.deposit(
        [Work(pipeline="wk", function="workflow.examples.sleep", parameters={"seconds": 1.5}) for _ in range(2)]
    )
    assert await worker(nats_url, isolation="process", concurrency=2, lives=2).run() == 0
    works = [await client.get(work_id) for work_id in ids]
    assert all(work.status == "success" for work in works)
    assert max(work.start for work in works) < min(work.stop for work in works)  # they overlapped


async def test_an_idle_worker_starts_works_deposited_one_by_one_at_once(client, nats_url, monkeypatch):
    # A bucket found empty is skipped only until work is queued in it, even when the queue
    # event outruns the message into the bucket; with --sleep 300 a miss would hang here.
    asleep = long_sleeps(monkeypatch)
    idle = worker(nats_url, function="workflow.examples.add")
    running = asyncio.create_task(idle.run())
    for i in range(10):
        await asyncio.wait_for(asleep.wait(), 20)  # asleep on empty buckets: only the deposit wakes it
        asleep.clear()
        [work_id] = await client.deposit(Work(pipeline="wk", parameters={"a": i, "b": 0}))
        await eventually(lambda work_id=work_id: status_of(client, work_id, "success"), timeout=20)
        assert (await client.get(work_id)).results == {"value": i}
    idle.signal(signal.SIGTERM)
    assert await asyncio.wait_for(running, 10) == 0
