"""Works that wait, against a real nats-server with resolvers in this process: precursors
and delays, released exactly once, cancelled when a precursor fails, run in order."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from conftest import eventually, running
from workflow import Work
from workflow.core import events as ev
from workflow.core.errors import ValidationError
from workflow.followers.resolver import run_resolver
from workflow.worker.loop import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def resolver(nats_url):
    async with running(run_resolver, nats_url):
        yield


async def status_is(client, work_id: str, status: str):
    return (await client.get(work_id)).status == status


async def run_one(client, pipeline: str = "alpha", value: dict | None = None) -> str:
    """Withdraw one work of ``pipeline`` and succeed it; its id."""
    work = await client.withdraw(pipeline, timeout=10)
    assert work is not None
    await client.succeed(work, value or {"ok": True})
    return work.id


async def test_a_waiting_work_is_in_no_bucket_until_its_precursor_succeeds(client, resolver):
    [first] = await client.deposit(Work(pipeline="alpha"))
    [then] = await client.deposit(Work(pipeline="beta", precursors=[first]))
    assert (await client.get(then)).status == "waiting"
    assert await client.withdraw("beta", timeout=1) is None  # in no bucket
    assert await run_one(client, "alpha") == first
    await eventually(lambda: status_is(client, then, "queued"))
    assert (await client.withdraw("beta", timeout=5)).id == then
    released = [e for e in await client.history(then) if isinstance(e, ev.Requeued)]
    assert len(released) == 1 and first in released[0].reason


async def test_a_waiting_work_is_cancelled_naming_a_precursor_that_failed_for_good(client, resolver):
    [first] = await client.deposit(Work(pipeline="alpha", retries=0))
    [then] = await client.deposit(Work(pipeline="beta", precursors=[first]))
    work = await client.withdraw("alpha", timeout=5)
    await client.fail(work, "error", "boom", retry=False)
    await eventually(lambda: status_is(client, then, "cancelled"))
    cancelled = (await client.history(then))[-1]
    assert isinstance(cancelled, ev.Cancelled) and cancelled.reason == f"precursor {first} failed"


async def test_a_waiting_work_is_cancelled_when_its_precursor_is_cancelled(client, resolver):
    [first] = await client.deposit(Work(pipeline="alpha"))
    [then] = await client.deposit(Work(pipeline="beta", precursors=[first]))
    await client.cancel(first, reason="wrong input")
    await eventually(lambda: status_is(client, then, "cancelled"))
    assert (await client.history(then))[-1].reason == f"precursor {first} was cancelled"


async def test_an_unknown_precursor_is_refused_at_deposit_naming_it(client):
    with pytest.raises(ValidationError, match="01JNOSUCHWORK") as refused:
        await client.deposit(Work(pipeline="beta", precursors=["01JNOSUCHWORK"]))
    assert refused.value.field == "precursors"


async def test_a_precursor_already_succeeded_counts_at_once(client):
    [first] = await client.deposit(Work(pipeline="alpha"))
    await run_one(client, "alpha")
    [then] = await client.deposit(Work(pipeline="beta", precursors=[first]))  # no resolver running
    assert (await client.get(then)).status == "queued"
    assert (await client.withdraw("beta", timeout=5)).id == then


async def test_a_precursor_that_succeeded_while_no_resolver_ran_is_counted_when_one_starts(client, nats_url):
    [first] = await client.deposit(Work(pipeline="alpha"))
    [then] = await client.deposit(Work(pipeline="beta", precursors=[first]))
    await run_one(client, "alpha")
    async with running(run_resolver, nats_url):
        await eventually(lambda: status_is(client, then, "queued"))


async def test_two_resolvers_release_a_work_exactly_once(client, nats_url):
    async with running(run_resolver, nats_url, count=2):
        firsts = await client.deposit([Work(pipeline="alpha") for _ in range(20)])
        thens = await client.deposit([Work(pipeline="beta", precursors=[f]) for f in firsts])
        for _ in firsts:
            await run_one(client, "alpha")
        for then in thens:
            await eventually(lambda then=then: status_is(client, then, "queued"))

    for then in thens:
        assert [type(e) for e in await client.history(then)] == [ev.Deposited, ev.Requeued]


async def test_a_delayed_work_does_not_start_before_its_time_and_starts_after(client, resolver):
    [work_id] = await client.deposit(Work(pipeline="alpha"), delay="2s")
    deposited = (await client.history(work_id))[0]
    not_before = deposited.waits.not_before
    assert not_before == pytest.approx(deposited.time + 2, abs=0.01)
    assert (await client.get(work_id)).start == not_before  # what show and ls say
    work = await client.withdraw("alpha", timeout=10)
    assert work is not None and work.id == work_id
    started = [e for e in await client.history(work_id) if isinstance(e, ev.Started)]
    assert started[0].time >= not_before


async def test_a_work_due_while_no_resolver_ran_is_released_when_one_starts(client, nats_url):
    [work_id] = await client.deposit(Work(pipeline="alpha"), at=time.time() + 0.3)
    await asyncio.sleep(0.5)  # its time passes with nobody to release it
    assert (await client.get(work_id)).status == "waiting"
    async with running(run_resolver, nats_url):
        await eventually(lambda: status_is(client, work_id, "queued"))


async def test_a_tree_of_200_works_runs_in_dependency_order(client, nats_url, resolver):
    works = [Work(pipeline="dag", function="workflow.examples.add", parameters={"a": i, "b": 0}) for i in range(200)]
    for index, work in enumerate(works):
        work.id = f"01JDAG{index:020d}"
        if index:  # a binary tree: each work after its parent; its first leaves form a chain
            work.precursors = [works[(index - 1) // 2].id]
    await client.deposit(works)
    worker = Worker(WorkerConfig(pipelines=["dag"], isolation="thread", concurrency=4, sleep=1, lives=200,
                                 connect={"url": nats_url}))
    assert await asyncio.wait_for(worker.run(), 80) == 0
    histories = {w.id: await client.history_records(w.id) for w in works}
    succeeded = {i: next(r.seq for r in h if isinstance(r.event, ev.Succeeded)) for i, h in histories.items()}
    for work in works:
        started = next(r.seq for r in histories[work.id] if isinstance(r.event, ev.Started))
        assert all(succeeded[p] < started for p in work.precursors or [])


async def test_a_random_dag_with_failures_runs_in_order_and_cancels_what_waits_on_a_failure(
    client, nats_url, resolver
):
    """Through NATS, the real resolver and a real worker: a seeded random DAG of 60 works,
    a tenth of them failing; each work finishes once, in dependency order, and every work
    downstream of a failure is cancelled naming a precursor that did not succeed."""
    import random

    rng = random.Random(20261127)
    works = []
    for index in range(60):
        fails = rng.random() < 0.1
        work = Work(pipeline="rdag", retries=0, function="workflow.examples.fail" if fails else "workflow.examples.add",
                    parameters={} if fails else {"a": index, "b": 0})
        work.id = f"01JRDAG{index:019d}"
        earlier = [w.id for w in works]
        work.precursors = rng.sample(earlier, min(len(earlier), rng.randint(0, 3))) or None
        works.append(work)
    await client.deposit(works)

    async def all_finished() -> bool:
        heads = await asyncio.gather(*(client.head(w.id) for w in works))
        return all(ev.is_final(head.event) for head in heads)

    worker = Worker(WorkerConfig(pipelines=["rdag"], isolation="thread", concurrency=4, sleep=1,
                                 connect={"url": nats_url}))
    running = asyncio.create_task(worker.run())
    try:
        await eventually(all_finished, timeout=120, interval=0.2)
    finally:
        worker.signal(signal.SIGTERM)  # finish the running works and stop
        await asyncio.wait_for(running, 30)

    histories = {w.id: await client.history_records(w.id) for w in works}
    status = {i: type(h[-1].event).__name__ for i, h in histories.items()}
    for work in works:
        history = histories[work.id]
        assert sum(ev.is_final(r.event) for r in history) == 1
        before = work.precursors or []
        if all(status[p] == "Succeeded" for p in before):
            started = next(r.seq for r in history if isinstance(r.event, ev.Started))
            for p in before:
                assert next(r.seq for r in histories[p] if isinstance(r.event, ev.Succeeded)) < started
            assert status[work.id] == ("Failed" if work.function == "workflow.examples.fail" else "Succeeded")
        else:
            assert status[work.id] == "Cancelled" and not any(isinstance(r.event, ev.Started) for r in history)
            named = history[-1].event.reason.split()[1]
            assert named in before and status[named] != "Succeeded"
    assert {"Succeeded", "Failed", "Cancelled"} <= set(status.values())  # the seed exercises all three
