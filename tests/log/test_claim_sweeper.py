"""The claim sweeper against a real nats-server: a dead filtered claim is recorded lost
with no unfiltered worker, exactly once however many sweepers run, and a live one is never
touched (:mod:`workflow.followers.claim_sweeper`)."""

from __future__ import annotations

import asyncio

import workflow
from conftest import eventually
from workflow import Work
from workflow.followers.claim_sweeper import ClaimSweeper

#: A claim that must stay alive heartbeats every third of this: a loaded machine's stall stays well within.
LEASE = 6.0
#: A claim that dies is noticed within this (its key lives one lease after its last beat).
SHORT_LEASE = 2.0


async def seen_by_the_read_model(client, ids) -> None:
    async def projected():
        return await client.results.count(id_prefix=None, status="queued", fresh=True) >= len(ids)
    await eventually(projected, timeout=15)


def types(history) -> list[str]:
    return [type(event).__name__ for event in history]


async def running_sweeper(url: str, interval: float, stop: asyncio.Event, name: str):
    """A sweeper on its own connection, started; returns it and its task."""
    client = workflow.connect(url, name=name)
    await client.open()
    sweeper = ClaimSweeper(client, interval=interval)
    task = asyncio.create_task(sweeper.run(stop))
    return client, sweeper, task


async def crashed_filter_claim(url: str, work_id: str) -> str:
    """Claim ``work_id`` by filter on a client that then vanishes (no heartbeat, no release,
    like a SIGKILL); the claimer's name."""
    crashed = workflow.connect(url, lease=SHORT_LEASE)
    await crashed.open()
    held = await crashed.withdraw("p", tags="x", timeout=10)
    assert held is not None and held.id == work_id
    await crashed.close(release=False)
    return crashed.name


async def test_a_dead_filtered_claim_is_recorded_lost_by_the_sweeper_and_a_filtered_worker_runs_it_again(
    nats_url, results_service
):
    stop = asyncio.Event()
    sweeping, sweeper, task = await running_sweeper(nats_url, 0.3, stop, "sweeper-a")
    try:
        async with workflow.connect(nats_url, lease=LEASE) as filtered:
            [work_id] = await filtered.deposit(Work(pipeline="p", tags=["x"], timeout=3600))
            await seen_by_the_read_model(filtered, [work_id])
            claimer = await crashed_filter_claim(nats_url, work_id)
            # No unfiltered worker: the sweeper notices the key expire and records the loss
            await eventually(lambda: _has_failed(filtered, work_id), timeout=30)
            again = await filtered.withdraw("p", tags="x", timeout=30, poll=0.2)
            assert again is not None and again.id == work_id and again.attempt == 2
            await filtered.succeed(again, {"ok": 1})
            history = await filtered.history(work_id)
            assert types(history) == ["Deposited", "Started", "Failed", "Started", "Succeeded"]
            claimed, lost, rerun = history[1], history[2], history[3]
            assert claimed.via == "filter" and rerun.via == "filter"
            assert lost.reason == "lost" and lost.will_retry and lost.attempt == 1 and lost.by == "sweeper-a"
            assert lost.error == f"worker {claimer} stopped heartbeating its filtered claim of attempt 1"
            assert lost.queue_seq == claimed.queue_seq == rerun.queue_seq  # one chain, one queue message
            assert sweeper.recorded == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await sweeping.close()


async def test_a_dead_filtered_claim_with_no_retry_left_ends_failed(nats_url, results_service):
    stop = asyncio.Event()
    sweeping, _, task = await running_sweeper(nats_url, 0.3, stop, "sweeper-a")
    try:
        async with workflow.connect(nats_url, lease=LEASE) as client:
            [work_id] = await client.deposit(Work(pipeline="p", tags=["x"], retries=0))
            await seen_by_the_read_model(client, [work_id])
            await crashed_filter_claim(nats_url, work_id)
            await eventually(lambda: _has_failed(client, work_id), timeout=30)
            lost = (await client.history(work_id))[-1]
            assert lost.reason == "lost" and not lost.will_retry
            assert (await client.get(work_id)).status == "failure"
            assert await client.withdraw("p", tags="x", timeout=2) is None  # nothing left to claim
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await sweeping.close()


async def test_a_live_filtered_claim_is_untouched_over_many_sweeps(nats_url, results_service):
    stop = asyncio.Event()
    sweeping, sweeper, task = await running_sweeper(nats_url, 0.2, stop, "sweeper-a")
    try:
        async with workflow.connect(nats_url, lease=LEASE) as filtered:
            [work_id] = await filtered.deposit(Work(pipeline="p", tags=["x"]))
            await seen_by_the_read_model(filtered, [work_id])
            held = await filtered.withdraw("p", tags="x", timeout=10)
            assert held.id == work_id
            await eventually(lambda: _watches(sweeper, work_id), timeout=15)
            first = sweeper.sweeps
            # More than a lease of sweeps: a key not renewed would have expired meanwhile
            await eventually(lambda: _swept_since(sweeper, first, int(1.5 * LEASE / sweeper.interval)), timeout=60)
            assert work_id in sweeper.held and sweeper.recorded == 0
            assert types(await filtered.history(work_id)) == ["Deposited", "Started"]
            await filtered.succeed(held, {"done": 1})
            assert types(await filtered.history(work_id)) == ["Deposited", "Started", "Succeeded"]
            await eventually(lambda: _not_watched(sweeper, work_id), timeout=15)  # the outcome ends the watch
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await sweeping.close()


async def test_two_sweepers_record_one_loss(nats_url, results_service):
    async with workflow.connect(nats_url, lease=LEASE) as client, \
            workflow.connect(nats_url, name="sweeper-a") as a, workflow.connect(nats_url, name="sweeper-b") as b:
        works = [Work(pipeline="p", tags=["x"], retries=0) for _ in range(3)]  # a lost one is not claimed again
        ids = await client.deposit(works)
        await seen_by_the_read_model(client, ids)
        for work_id in ids:
            await crashed_filter_claim(nats_url, work_id)
        first, second = ClaimSweeper(a, interval=0.1), ClaimSweeper(b, interval=0.1)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(s.run(stop)) for s in (first, second)]
        try:
            # Both follow the log; both sweep every 0.1 s and race for each loss
            await eventually(lambda: _all_failed(client, ids), timeout=30)
            swept = first.sweeps, second.sweeps  # then more sweeps of both, finding nothing more to record
            await eventually(lambda: _swept_since(first, swept[0], 5), timeout=15)
            await eventually(lambda: _swept_since(second, swept[1], 5), timeout=15)
        finally:
            stop.set()
            await asyncio.gather(*(asyncio.wait_for(t, 15) for t in tasks))
        for work_id in ids:
            assert types(await client.history(work_id)) == ["Deposited", "Started", "Failed"]
        assert first.recorded + second.recorded == len(ids)
        # And head to head on one check: the CAS lets exactly one through
        [last] = await client.deposit(Work(pipeline="p", tags=["x"], retries=0))
        await seen_by_the_read_model(client, [last])
        await crashed_filter_claim(nats_url, last)
        await eventually(lambda: _key_gone(client, last), timeout=30)
        outcomes = await asyncio.gather(first.check(last, "p"), second.check(last, "p"))
        assert sorted(outcomes) == [False, True]
        assert types(await client.history(last)) == ["Deposited", "Started", "Failed"]


async def _has_failed(client, work_id) -> bool:
    return types(await client.history(work_id))[-1] == "Failed"


async def _all_failed(client, ids) -> bool:
    return all([await _has_failed(client, work_id) for work_id in ids])


async def _key_gone(client, work_id) -> bool:
    started = (await client.head(work_id)).event
    return await client.claims.heartbeats.alive(work_id, started.by, started.attempt) is False


async def _watches(sweeper, work_id) -> bool:
    return work_id in sweeper.held


async def _not_watched(sweeper, work_id) -> bool:
    return work_id not in sweeper.held


async def _swept_since(sweeper, first: int, count: int) -> bool:
    return sweeper.sweeps >= first + count
