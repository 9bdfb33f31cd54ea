"""The async client against a real nats-server: deposit, withdraw, update, cancel, history."""

from __future__ import annotations

import asyncio

import pytest

import workflow
from conftest import eventually
from workflow import Work
from workflow.core import events as ev
from workflow.core.errors import (
    ConflictError,
    ConnectionFailedError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationError,
)
from workflow.core.settings import lease_seconds
from workflow.log.buckets import Buckets


async def test_deposit_returns_ids_and_a_withdrawn_work_is_running(client):
    [work_id] = await client.deposit(Work(pipeline="sample-pipeline", parameters={"a": 1, "b": 2}))
    work = await client.withdraw("sample-pipeline", timeout=10)
    assert work.id == work_id
    assert work.status == "running" and work.attempt == 1 and work.start is not None
    assert work.parameters == {"a": 1, "b": 2}
    assert await client.withdraw("sample-pipeline") is None


async def test_redepositing_the_same_work_is_a_no_op(client):
    work = Work(pipeline="p")
    first = await client.deposit(work)
    again = await client.deposit(work)
    copy = await client.deposit(Work(pipeline="p", id=work.id, priority=5))
    assert first == again == copy
    assert [type(e) for e in await client.history(work.id)] == [ev.Deposited]
    assert await client.withdraw("p", timeout=10) is not None
    assert await client.withdraw("p") is None


async def test_withdraw_takes_the_highest_priority_first_then_the_oldest(client):
    low = await client.deposit(Work(pipeline="p", priority=1))
    mid1 = await client.deposit(Work(pipeline="p", priority=3))
    high = await client.deposit(Work(pipeline="p", priority=5))
    mid2 = await client.deposit(Work(pipeline="p", priority=3))
    order = [(await client.withdraw("p", timeout=10)).id for _ in range(4)]
    assert order == high + mid1 + mid2 + low


async def test_withdraw_can_be_narrowed_to_a_site_a_priority_and_several_pipelines(client):
    await client.deposit([Work(pipeline="a", site="chime"), Work(pipeline="b", site="kko", priority=4)])
    assert await client.withdraw("a", site="kko", timeout=1) is None
    assert await client.withdraw(["a", "b"], priority=1, timeout=1) is None
    got = await client.withdraw(["a", "b"], timeout=10)
    assert (got.pipeline, got.site) == ("b", "kko")
    got = await client.withdraw(["a", "b"], site="chime", timeout=10)
    assert got.pipeline == "a"


async def test_many_clients_withdrawing_at_once_never_receive_the_same_work(nats_url):
    async with workflow.connect(nats_url) as depositor:
        ids = await depositor.deposit([Work(pipeline="p", parameters={"i": i}) for i in range(60)])

    async def drain() -> list[str]:
        got = []
        async with workflow.connect(nats_url) as c:
            while (work := await c.withdraw("p", timeout=2)) is not None:
                got.append(work.id)
                await c.succeed(work, {"by": c.name})
        return got

    results = await asyncio.gather(*(drain() for _ in range(6)))
    taken = [work_id for got in results for work_id in got]
    assert sorted(taken) == sorted(ids)  # every work once, none twice
    assert len(set(taken)) == len(taken)


async def test_update_records_the_outcome_in_the_seed_shape(client):
    await client.deposit(Work(pipeline="p", parameters={"a": 1, "b": 2}))
    work = await eventually(lambda: Work.withdraw(pipeline="p"))  # the seed shape has no timeout: ask again
    work.results = {"sum": 3}
    work.status = "success"
    await work.update()
    stored = await client.get(work.id)
    assert stored.status == "success" and stored.results == {"sum": 3} and stored.stop is not None
    assert [type(e).__name__ for e in await client.history(work.id)] == ["Deposited", "Started", "Succeeded"]


async def test_after_an_outcome_the_callers_work_shows_what_the_log_recorded(client):
    fields = ("status", "attempt", "results", "products", "plots", "stop")
    [work_id] = await client.deposit(Work(pipeline="p", retries=1))
    work = await client.withdraw("p", timeout=10)
    work.status = "failure"  # whatever the caller set, the recorded outcome wins
    await client.fail(work, "error", "boom", results={"partial": 1})
    recorded = await client.get(work_id)
    assert [getattr(work, f) for f in fields] == [getattr(recorded, f) for f in fields]
    assert work.status == "queued" and work.results == {"partial": 1, "error": "boom", "reason": "error"}
    work = await client.withdraw("p", timeout=10, poll=0.05)
    await client.succeed(work, {"sum": 3}, products=["a.h5"])
    recorded = await client.get(work_id)
    assert [getattr(work, f) for f in fields] == [getattr(recorded, f) for f in fields]
    assert (work.status, work.attempt, work.products) == ("success", 2, ["a.h5"])


async def test_the_seed_shape_deposit_works_with_the_current_client(client):
    work = Work(pipeline="p")
    work_id = await work.deposit(return_ids=True)
    assert (await client.get(work_id)).status == "queued"


async def test_a_reported_failure_is_retried_until_the_retries_are_used(client):
    [work_id] = await client.deposit(Work(pipeline="p", retries=1))
    for attempt, expected in ((1, "queued"), (2, "failure")):
        work = await client.withdraw("p", timeout=10, poll=0.05)
        assert work is not None and work.attempt == attempt
        work.status = "failure"
        work.results = {"error": "bad data"}
        await client.update(work)
        assert (await client.get(work_id)).status == expected
    assert await client.withdraw("p", timeout=0.5, poll=0.05) is None
    failures = [e for e in await client.history(work_id) if isinstance(e, ev.Failed)]
    assert [(f.attempt, f.will_retry, f.error) for f in failures] == [(1, True, "bad data"), (2, False, "bad data")]


async def test_a_stale_update_raises_conflict_and_changes_nothing(client, nats_url):
    [work_id] = await client.deposit(Work(pipeline="p"))
    work = await client.withdraw("p", timeout=10)
    async with workflow.connect(nats_url) as operator:
        await operator.cancel(work_id, reason="wrong parameters")
    work.status = "success"
    work.results = {"late": True}
    with pytest.raises(ConflictError):
        await client.update(work)
    stored = await client.get(work_id)
    assert stored.status == "cancelled" and stored.results is None
    assert [type(e).__name__ for e in await client.history(work_id)] == ["Deposited", "Started", "Cancelled"]


async def test_a_work_cancelled_before_withdraw_never_runs(client):
    [work_id] = await client.deposit(Work(pipeline="p"))
    await client.cancel(work_id, reason="not needed")
    assert await client.withdraw("p", timeout=1) is None
    assert (await client.get(work_id)).status == "cancelled"
    with pytest.raises(ConflictError, match="already finished"):
        await client.cancel(work_id)


async def test_unknown_ids_are_not_found(client):
    with pytest.raises(NotFoundError):
        await client.get("01NOSUCHWORK0000000000000")
    with pytest.raises(NotFoundError):
        await client.cancel("01NOSUCHWORK0000000000000")


async def test_invalid_input_is_refused_before_anything_is_written(client):
    with pytest.raises(ValidationError, match="pipeline"):
        await client.withdraw("not a pipeline")
    with pytest.raises(ValidationError, match="priority"):
        await client.withdraw("p", priority=7)
    with pytest.raises(ValidationError, match="work: expected a Work or its payload"):
        await client.deposit([42])
    work = await client.deposit(Work(pipeline="p"))
    got = await client.withdraw("p", timeout=10)
    got.status = "running"
    with pytest.raises(ValidationError, match="status"):
        await client.update(got)
    assert work


async def test_oversized_results_are_refused_with_a_clear_error_and_the_work_is_still_held(client):
    await client.deposit(Work(pipeline="p"))
    work = await client.withdraw("p", timeout=10)
    with pytest.raises(PayloadTooLargeError, match="bytes"):
        await client.succeed(work, {"blob": "x" * 9_000_000})
    await client.fail(work, "too-large", "results too large", retry=False)
    assert (await client.get(work.id)).status == "failure"


async def test_a_work_whose_holder_vanished_is_handed_on_with_the_lost_attempt_recorded(nats_url):
    async with workflow.connect(nats_url) as depositor:
        [work_id] = await depositor.deposit(Work(pipeline="p", retries=1))
    crashed = workflow.connect(nats_url)
    await crashed.open()
    assert (await crashed.withdraw("p", timeout=10)).id == work_id
    await crashed.close(release=False)  # like a SIGKILL: no heartbeat, no release
    async with workflow.connect(nats_url) as survivor:
        work = await survivor.withdraw("p", timeout=15, poll=0.1)  # after the 1.5 s lease
        assert work is not None and work.attempt == 2
        await survivor.succeed(work, {"ok": True})
        history = await survivor.history(work_id)
    kinds = [(type(e).__name__, getattr(e, "attempt", None), getattr(e, "reason", None)) for e in history]
    assert kinds == [
        ("Deposited", None, None), ("Started", 1, None), ("Failed", 1, "lost"), ("Started", 2, None),
        ("Succeeded", 2, None),
    ]


async def test_a_work_that_loses_every_worker_ends_failed_after_its_retries(nats_url):
    async with workflow.connect(nats_url) as depositor:
        [work_id] = await depositor.deposit(Work(pipeline="p", retries=1))
    for _ in range(2):
        crashed = workflow.connect(nats_url)
        await crashed.open()
        assert await crashed.withdraw("p", timeout=15, poll=0.1) is not None
        await crashed.close(release=False)
    async with workflow.connect(nats_url) as last:
        # the redelivery (after the lease) finds the retries used up: it records the final
        # failure and runs nothing
        async def finally_failed() -> bool:
            assert await last.withdraw("p", timeout=0.5, poll=0.1) is None
            return (await last.get(work_id)).status == "failure"

        await eventually(finally_failed, timeout=20)
        state = await last.get(work_id)
    assert state.status == "failure" and state.results["reason"] == "lost" and state.attempt == 2


async def test_a_lease_is_kept_alive_past_the_ack_wait_while_the_holder_lives(client, nats_url):
    [work_id] = await client.deposit(Work(pipeline="p"))
    work = await client.withdraw("p", timeout=10)
    async with workflow.connect(nats_url) as other:
        assert await other.withdraw("p", timeout=4.5, poll=0.2) is None  # 3 lease windows
    await client.succeed(work)
    assert [type(e).__name__ for e in await client.history(work_id)] == ["Deposited", "Started", "Succeeded"]


async def test_a_held_work_notices_a_cancel_at_its_next_heartbeat(client, nats_url):
    [work_id] = await client.deposit(Work(pipeline="p"))
    await client.withdraw("p", timeout=10)
    lease = client.lease(work_id)
    async with workflow.connect(nats_url) as operator:
        await operator.cancel(work_id)
    # At once when the cancel event is heard; at the latest at the next heartbeat (a third
    # of the lease), which a busy machine may delay: wait for one heartbeat and more.
    await asyncio.wait_for(lease.lost.wait(), timeout=lease_seconds() / 3 + 20)
    assert lease.lost_reason == "cancelled"
    assert client.lease(work_id) is None


async def test_closing_a_client_gives_its_works_back_at_once(nats_url):
    async with workflow.connect(nats_url) as depositor:
        [work_id] = await depositor.deposit(Work(pipeline="p"))
    async with workflow.connect(nats_url) as leaving:
        assert await leaving.withdraw("p", timeout=10) is not None
    async with workflow.connect(nats_url) as next_worker:
        # given back, not lost: the history below says "interrupted", not "lost" (a lease run out)
        work = await next_worker.withdraw("p", timeout=10, poll=0.05)
        assert work is not None and work.attempt == 2
        await next_worker.succeed(work)
        history = await next_worker.history(work_id)
    assert [(type(e).__name__, getattr(e, "reason", None)) for e in history] == [
        ("Deposited", None), ("Started", None), ("Failed", "interrupted"), ("Started", None), ("Succeeded", None),
    ]


async def test_requeue_reprioritises_a_queued_work_and_the_old_delivery_is_stale(client):
    [work_id] = await client.deposit(Work(pipeline="p", priority=1))
    other = await client.deposit(Work(pipeline="p", priority=3))
    await client.requeue(work_id, priority=5, reason="urgent")
    assert (await client.withdraw("p", timeout=10)).id == work_id
    assert (await client.withdraw("p", timeout=10)).id == other[0]
    assert await client.withdraw("p", timeout=1) is None  # the priority-1 message was discarded as stale


async def test_requeue_retries_a_failed_work_by_hand(client):
    [work_id] = await client.deposit(Work(pipeline="p", retries=0))
    work = await client.withdraw("p", timeout=10)
    await client.fail(work, "error", "boom")
    assert (await client.get(work_id)).status == "failure"
    await client.requeue(work_id, reason="fixed the input")
    again = await client.withdraw("p", timeout=10)
    assert again.id == work_id and again.attempt == 2
    await client.succeed(again, {"ok": 1})
    assert (await client.get(work_id)).status == "success"


async def test_connecting_to_nothing_says_which_url_and_how_to_start_a_server():
    with pytest.raises(ConnectionFailedError, match=r"nats://127\.0\.0\.1:1.*workflow server"):
        async with workflow.connect("nats://127.0.0.1:1"):
            pass


async def test_a_server_without_the_log_is_reported(nats_server):
    with pytest.raises(workflow.errors.WorkflowError, match="no WORKFLOW stream"):
        async with workflow.connect(nats_server.url):
            pass


async def test_a_bucket_made_after_a_withdraw_is_seen_at_once_by_the_next_withdraw(client):
    assert await client.withdraw("p") is None  # discovers the (no) buckets and caches them
    [work_id] = await client.deposit(Work(pipeline="p", site="gbo"))
    # within half the discovery cache's life (DISCOVERY_TTL), so a cached "no such bucket"
    # fails this; not necessarily on the first pull: under load, a no_wait pull sent just
    # after the deposit has once come back empty (the server tells a stream's consumers of
    # a new message a moment after storing it)
    got = await client.withdraw("p", timeout=Buckets.DISCOVERY_TTL / 2, poll=0.05)
    assert got is not None and got.id == work_id


async def test_buckets_show_waiting_and_held_works(client):
    await client.deposit(
        [Work(pipeline="p", priority=5), Work(pipeline="p", priority=5), Work(pipeline="q", site="kko")]
    )
    held = await client.withdraw("p", timeout=10)
    stats = {(s.pipeline, s.site, s.priority): (s.undelivered, s.held) for s in await client.buckets()}
    assert stats == {("p", "local", 5): (1, 1), ("q", "kko", 3): (1, 0)}
    await client.succeed(held)

    async def acked() -> bool:
        stats = {(s.pipeline, s.priority): (s.undelivered, s.held) for s in await client.buckets()}
        return stats[("p", 5)] == (1, 0)

    # the ack is published, not awaited (workflow.log.outcomes): the server counts it a moment later
    assert await eventually(acked)
