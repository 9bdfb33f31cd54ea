"""Claiming in batches (``withdraw_many``) against a real nats-server: each work goes to
exactly one claimer, and priority order holds across a batch."""

from __future__ import annotations

import asyncio

import pytest

import workflow
from workflow import Work

pytestmark = pytest.mark.timeout(60)


async def test_two_clients_claiming_batches_from_the_same_buckets_get_each_work_exactly_once(client, nats_url):
    ids = set(await client.deposit([Work(pipeline="b", priority=1 + i % 5) for i in range(300)]))
    async with workflow.connect(nats_url, lease=60) as one, workflow.connect(nats_url, lease=60) as two:

        async def drain(claimer: workflow.Client) -> list[str]:
            taken: list[str] = []
            while True:
                batch = await claimer.withdraw_many("b", 16)
                if not batch:
                    if not any(bucket.waiting for bucket in await claimer.buckets()):
                        return taken  # empty, and not only for one no-wait pull
                    await asyncio.sleep(0.05)  # a poll's pause: works wait that the pull did not see yet
                taken += [work.id for work in batch]
                await asyncio.gather(*(claimer.succeed(work) for work in batch))

        first, second = await asyncio.gather(drain(one), drain(two))
    assert first and second, "both claimers should have taken some"
    assert sorted(first + second) == sorted(ids)  # every work once: none twice, none missed


async def test_a_batch_takes_higher_priorities_first_and_lower_ones_only_when_those_are_empty(client):
    low = await client.deposit([Work(pipeline="b", priority=1) for _ in range(5)])
    high = await client.deposit([Work(pipeline="b", priority=5) for _ in range(3)])
    middle = await client.deposit([Work(pipeline="b", priority=3) for _ in range(3)])
    batch = await client.withdraw_many("b", 8)
    assert [work.id for work in batch] == high + middle + low[:2]
    assert [work.priority for work in batch] == [5, 5, 5, 3, 3, 3, 1, 1]


async def test_a_batch_of_a_small_limit_never_takes_lower_priority_work_while_higher_waits(client):
    await client.deposit([Work(pipeline="b", priority=2) for _ in range(4)])
    urgent = await client.deposit([Work(pipeline="b", priority=4) for _ in range(4)])
    assert [work.id for work in await client.withdraw_many("b", 2)] == urgent[:2]
    assert [work.id for work in await client.withdraw_many("b", 2)] == urgent[2:]


async def test_an_empty_batch_comes_back_at_once_and_withdraw_still_takes_one(client):
    assert await client.withdraw_many("b", 16) == []
    [work_id] = await client.deposit(Work(pipeline="b"))
    work = await client.withdraw("b", timeout=10)
    assert work is not None and work.id == work_id and work.status == "running"


async def test_a_cancel_reaches_every_held_work_of_a_batch_as_an_event(client, nats_url):
    ids = await client.deposit([Work(pipeline="b") for _ in range(3)])
    batch = await client.withdraw_many("b", 3)
    leases = [client.lease(work) for work in batch]
    async with workflow.connect(nats_url) as operator:
        await operator.cancel(ids[1])
    cancelled = client.lease(ids[1]) or next(lease for lease in leases if lease.work_id == ids[1])
    await asyncio.wait_for(cancelled.lost.wait(), timeout=10)
    assert cancelled.lost_reason == "cancelled"
    assert client.lease(ids[0]) is not None and client.lease(ids[2]) is not None


async def test_a_fetched_delivery_is_not_started_until_claimed_and_one_given_back_is_delivered_again(client):
    urgent, later = await client.deposit([Work(pipeline="b", priority=5), Work(pipeline="b", priority=2)])
    fetched = await client.claims.fetch("b", 2)
    assert [d.priority for d in fetched] == [5, 2]  # priority order across the fetch
    assert (await client.get(urgent)).status == "queued"  # nothing recorded by a fetch
    await client.claims.give_back(fetched[1])
    work = await client.claims.claim(fetched[0])
    assert work is not None and (work.id, work.status, work.attempt) == (urgent, "running", 1)
    [again] = await client.claims.fetch("b", 2)  # the given-back one, at once, no attempt used
    assert again.msg.metadata.num_delivered == 2
    redelivered = await client.claims.claim(again)
    assert redelivered is not None and (redelivered.id, redelivered.attempt) == (later, 1)


async def test_a_delivery_whose_work_was_cancelled_before_its_claim_is_stale(client, nats_url):
    [work_id] = await client.deposit(Work(pipeline="b"))
    [delivered] = await client.claims.fetch("b", 1)
    await client.cancel(work_id)
    assert await client.claims.claim(delivered) is None  # the Started CAS is refused
    assert (await client.get(work_id)).status == "cancelled"
    assert await client.claims.fetch("b", 1) == []  # and the stale message was termed
