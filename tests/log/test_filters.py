"""Filtered withdraws against a real nats-server and results service: a filtered claimer
takes only matching works, leaves the rest queued in order, holds its works by a heartbeat
key, and the bucket watches its claims (DESIGN.md, "Withdraw filters")."""

from __future__ import annotations

import asyncio
import time

import pytest

import workflow
from conftest import eventually
from workflow import Work
from workflow.core import events as ev
from workflow.core.errors import ConflictError, ValidationError
from workflow.log.claimer_keys import Beat

#: Leases long enough to survive a stalled, loaded test machine where a claim must stay alive.
LEASE = 6.0


async def seen_by_the_read_model(client, ids) -> None:
    """Wait until the results service holds these works as queued (candidates come from it)."""
    async def projected():
        return await client.results.count(id_prefix=None, status="queued", fresh=True) >= len(ids)
    await eventually(projected, timeout=15)


def types(history) -> list[str]:
    return [type(event).__name__ for event in history]


async def test_a_filtered_withdraw_takes_only_matching_works_and_leaves_the_rest_queued_in_order(
    nats_url, results_service
):
    # Given plain works and tagged works, interleaved, in one pipeline
    async with workflow.connect(nats_url, lease=LEASE) as client:
        plain1 = (await client.deposit(Work(pipeline="p")))[0]
        tagged1 = (await client.deposit(Work(pipeline="p", tags=["calib", "x"])))[0]
        plain2 = (await client.deposit(Work(pipeline="p", tags=["other"])))[0]
        tagged2 = (await client.deposit(Work(pipeline="p", tags=["beam"], priority=4)))[0]
        await seen_by_the_read_model(client, [plain1, tagged1, plain2, tagged2])
        # When a filtered withdraw asks for any of two tags
        first = await client.withdraw("p", tags=["calib", "beam"], timeout=10)
        second = await client.withdraw("p", tags=["calib", "beam"], timeout=10)
        # Then it gets the matching works, highest priority first, and nothing else
        assert [first.id, second.id] == [tagged2, tagged1]
        assert await client.withdraw("p", tags=["calib", "beam"], timeout=1) is None
        started = (await client.history(first.id))[-1]
        assert isinstance(started, ev.Started) and started.via == "filter"
        # And an unfiltered withdraw still finds the plain works in their order
        assert (await client.withdraw("p", timeout=10)).id == plain1
        assert (await client.withdraw("p", timeout=10)).id == plain2
        assert await client.withdraw("p", timeout=1) is None  # the filter-claimed messages are left to their claims


async def test_work_withdraw_takes_the_seed_filters_event_user_and_parent(nats_url, results_service):
    async with workflow.connect(nats_url, lease=LEASE) as client:
        ids = await client.deposit([
            Work(pipeline="p", event=[1, 2], user="ann"),
            Work(pipeline="p", event=[3], user="bob", config={"parent": "night-1"}),
            Work(pipeline="p", event=[3], user="ann", config={"parent": "night-2"}),
        ])
        await seen_by_the_read_model(client, ids)
        assert (await eventually(lambda: Work.withdraw("p", event=[9, 2]))).id == ids[0]
        assert (await eventually(lambda: Work.withdraw("p", user="ann", parent="night-2"))).id == ids[2]
        assert await Work.withdraw("p", user="ann") is None  # ann's others are taken
        work = await eventually(lambda: Work.withdraw("p", parent="night-1", event=3))
        assert work.id == ids[1]
        work.status, work.results = "success", {"ok": True}
        await work.update()
        assert (await client.get(ids[1])).status == "success"


async def test_a_bad_filter_is_refused_with_the_field_it_names(client):
    with pytest.raises(ValidationError) as refused:
        await client.withdraw("p", event=["not-a-number"])
    assert refused.value.field == "event"


async def test_the_log_layer_client_refuses_a_filtered_withdraw_it_cannot_serve(nats_url):
    from workflow.core.errors import WorkflowError
    from workflow.log.client import Client

    async with Client(nats_url) as bare:
        with pytest.raises(WorkflowError, match="results service"):
            await bare.withdraw("p", tags=["x"])


async def test_a_live_filtered_claim_is_left_alone_by_the_bucket_and_finishes_once(nats_url, results_service):
    async with workflow.connect(nats_url, lease=LEASE) as filtered, workflow.connect(nats_url, lease=LEASE) as plain:
        [work_id] = await filtered.deposit(Work(pipeline="p", tags=["x"]))
        await seen_by_the_read_model(filtered, [work_id])
        held = await filtered.withdraw("p", tags="x", timeout=10)
        assert held.id == work_id
        # The heartbeat key names the claimer and its attempt
        assert await plain.claims.heartbeats.alive(work_id, filtered.name, 1) is True
        # An unfiltered worker meets the queue message: it must neither run nor discard it
        assert await plain.withdraw("p", timeout=1) is None
        assert types(await plain.history(work_id)) == ["Deposited", "Started"]
        await filtered.succeed(held, {"done": 1})
        await eventually(lambda: _ended(plain, work_id, filtered.name, 1))  # the key ends with the claim
        assert types(await plain.history(work_id)) == ["Deposited", "Started", "Succeeded"]


async def test_a_dead_filtered_claimer_is_recorded_lost_and_its_work_runs_again_through_the_bucket(
    nats_url, results_service
):
    lease = 2.0
    async with workflow.connect(nats_url, lease=lease) as plain:
        [work_id] = await plain.deposit(Work(pipeline="p", tags=["x"], timeout=2))
        await seen_by_the_read_model(plain, [work_id])
        crashed = workflow.connect(nats_url, lease=lease)
        await crashed.open()
        held = await crashed.withdraw("p", tags="x", timeout=10)
        assert held.id == work_id
        await crashed.close(release=False)  # like a SIGKILL: no heartbeat, no release
        # The bucket is the watchdog: the message comes back after the claim's timeout
        # plus a lease; its claimer's key has expired, so the attempt is lost and rerun.
        again = await plain.withdraw("p", timeout=30, poll=0.2)
        assert again is not None and again.id == work_id and again.attempt == 2
        await plain.succeed(again, {"ok": 1})
        history = await plain.history(work_id)
        assert types(history) == ["Deposited", "Started", "Failed", "Started", "Succeeded"]
        lost = history[2]
        assert lost.reason == "lost" and lost.will_retry and "filtered claim" in lost.error
        assert history[1].via == "filter" and history[3].via == "bucket"


async def test_a_filtered_claim_that_fails_is_retried_by_the_filter_after_its_backoff(nats_url, results_service):
    async with workflow.connect(nats_url, lease=LEASE) as client:
        [work_id] = await client.deposit(Work(pipeline="p", tags=["x"], retries=1))
        await seen_by_the_read_model(client, [work_id])
        first = await client.withdraw("p", tags="x", timeout=10)
        failed = await client.fail(first, "error", "boom")
        assert failed.will_retry
        second = await client.withdraw("p", tags="x", timeout=15, poll=0.1)
        assert second is not None and second.id == work_id and second.attempt == 2
        final = await client.fail(second, "error", "boom again")
        assert not final.will_retry  # retries=1: two attempts, then failed for good
        assert (await client.get(work_id)).status == "failure"


async def test_a_cancel_stops_a_filter_claimed_work_and_refuses_its_outcome(nats_url, results_service):
    async with workflow.connect(nats_url, lease=LEASE) as client:
        [work_id] = await client.deposit(Work(pipeline="p", tags=["x"]))
        await seen_by_the_read_model(client, [work_id])
        held = await client.withdraw("p", tags="x", timeout=10)
        lease = client.lease(held)
        await client.cancel(work_id, reason="wrong input")
        await eventually(lambda: _is_set(lease.lost))
        with pytest.raises(ConflictError):
            await client.succeed(held, {"late": True})
        await eventually(lambda: _ended(client, work_id, client.name, 1))


async def _ended(client, work_id, by, attempt) -> bool:
    return await client.claims.heartbeats.alive(work_id, by, attempt) is False


async def _is_set(event) -> bool:
    return event.is_set()


async def test_a_heartbeat_key_names_one_attempt_and_expires_after_its_lease(client):
    heartbeats = client.claims.heartbeats
    await heartbeats.put("W1", Beat(by="w", attempt=2), lease=1.0)
    assert await heartbeats.alive("W1", "w", 2) is True
    assert await heartbeats.alive("W1", "w", 1) is False  # an earlier claim's key vouches for nothing
    assert await heartbeats.alive("W1", "someone-else", 2) is False
    began = time.monotonic()
    await eventually(lambda: _dead(heartbeats, "W1"), timeout=10)
    assert time.monotonic() - began < 8


async def _dead(heartbeats, work_id) -> bool:
    return await heartbeats.alive(work_id, "w", 2) is False


async def test_a_cancel_the_stream_refused_does_not_stop_a_held_work(nats_url):
    # A cancel that lost its CAS race is still heard on core NATS by every subscriber;
    # it never happened, so the work must keep running (tests/cli/test_bulk_cli.py's race).
    from workflow.log.watch import CANCEL_CONFIRM_PAUSES

    async with workflow.connect(nats_url, lease=LEASE) as holder, workflow.connect(nats_url) as other:
        [work_id] = await holder.deposit(Work(pipeline="p"))
        held = await holder.withdraw("p", timeout=10)
        refused = ev.Cancelled(work_id=work_id, pipeline="p", time=time.time(), reason="lost the race")
        with pytest.raises(ConflictError):
            await other.append(refused, expected_seq=1)  # the head is the Started, not the deposit
        # Absence can only be waited for: the holder confirms a heard cancel within these pauses
        await asyncio.sleep(sum(CANCEL_CONFIRM_PAUSES) + 1.0)
        assert not holder.lease(held).lost.is_set()
        await holder.succeed(held, {"ok": True})
        # And a cancel the log took reaches the holder of another work at once
        [second] = await holder.deposit(Work(pipeline="p"))
        running = holder.lease(await holder.withdraw("p", timeout=10))
        await other.cancel(second)
        await eventually(lambda: _is_set(running.lost))
        assert running.lost_reason == "cancelled"
