"""Schedules against a real nats-server with schedulers in this process: definitions are
events in the log, the server's timers fire, each firing deposits exactly once."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import nats
import pytest

from conftest import eventually, running
from workflow import Work
from workflow.core import events as ev
from workflow.core import schedules as sch
from workflow.core.errors import ConflictError, NotFoundError, ValidationError
from workflow.followers.scheduler import Scheduler, run_scheduler
from workflow.log import jsapi
from workflow.log.schedules import TIMER_STREAM, ensure_timer_stream, server_time, timer_subject

pytestmark = pytest.mark.timeout(90)


async def deposited(nc, pipeline: str) -> set[str]:
    """Ids of the works of ``pipeline`` whose deposit is in the log (queue subjects)."""
    info = await jsapi.request(nc, "STREAM.INFO.WORKFLOW", {"subjects_filter": f"wf.{pipeline}.*.queued.>"})
    return {subject.split(".")[2] for subject in (info["state"].get("subjects") or {})}


async def timer_exists(nc, name: str) -> bool:
    info = await jsapi.request(nc, f"STREAM.INFO.{TIMER_STREAM}", {"subjects_filter": timer_subject(name)})
    return bool(info.get("state", {}).get("subjects"))  # (no stream yet: no timer)


async def pending_firings(nc) -> int:
    info = await jsapi.request(nc, f"STREAM.INFO.{TIMER_STREAM}", {"subjects_filter": "wfsched.fired.>"})
    return sum((info.get("state", {}).get("subjects") or {}).values())


async def test_adding_and_removing_a_schedule_are_events_in_the_log(client):
    # Given a schedule added, then when removed
    added = await client.add_schedule("nightly", Work(pipeline="alpha", parameters={"a": 1}), cron="0 0 2 * * *")
    [listed] = await client.schedules()
    assert listed.added == added and listed.added.work.user == "schedule:nightly"
    removed = await client.remove_schedule("nightly", reason="moved")
    # Then both are in the log, on the schedule's own subjects, and none is in force
    assert await client.schedules() == []
    js = client.nc.jetstream()
    first = await js.get_last_msg("WORKFLOW", "wf._schedule.nightly.added")
    last = await js.get_last_msg("WORKFLOW", "wf._schedule.nightly.removed")
    assert sch.decode(first.data) == added and sch.decode(last.data) == removed and removed.added == added.id


async def test_a_name_in_force_is_refused_an_unknown_one_is_not_found_and_a_removed_one_can_return(client):
    await client.add_schedule("hourly", Work(pipeline="alpha"), every="1h")
    with pytest.raises(ConflictError, match="exists"):
        await client.add_schedule("hourly", Work(pipeline="beta"), every="2h")
    with pytest.raises(NotFoundError, match="no schedule named 'other'"):
        await client.remove_schedule("other")
    await client.remove_schedule("hourly")
    with pytest.raises(NotFoundError):
        await client.remove_schedule("hourly")
    again = await client.add_schedule("hourly", Work(pipeline="beta"), cron="@hourly")
    assert [d.added for d in await client.schedules()] == [again]


async def test_the_server_accepts_every_spec_the_validator_accepts(nats_url):
    # The validator must never accept what the server refuses (that would fail only at the first firing)
    specs = ["@every 1s", "@every 10m", "@every 1h30m", "@every 1.5h", "0 0 2 * * *", "*/5 * * * * *",
             "0 30 9 * * mon-fri", "0 0 0 1,15 * *", "0 0 0 * jan-mar sun", "0 0-30/10 * * * *", "@daily",
             "@hourly", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"]
    nc = await nats.connect(nats_url)
    try:
        await ensure_timer_stream(nc)
        for index, given in enumerate(specs):
            spec = sch.schedule_spec(every=given[7:]) if given.startswith("@every") else sch.schedule_spec(cron=given)
            headers = {"Nats-Schedule": spec, "Nats-Schedule-Target": "wfsched.fired.check"}
            ack = json.loads((await nc.request(f"wfsched.timer.check-{index}", b"", headers=headers)).data)
            assert "error" not in ack, (spec, ack)
        await jsapi.request(nc, f"STREAM.PURGE.{TIMER_STREAM}", {"filter": "wfsched.>"})
    finally:
        await nc.close()


async def test_the_log_stays_immutable_and_the_timers_have_a_stream_of_their_own(nats_url, client):
    async with running(run_scheduler, nats_url):
        await client.add_schedule("tick", Work(pipeline="alpha"), every="1h")
        await eventually(lambda: timer_exists(client.nc, "tick"))
    log = (await jsapi.stream_info(client.nc))["config"]
    timers = (await jsapi.stream_info(client.nc, TIMER_STREAM))["config"]
    assert log["deny_purge"] and log["deny_delete"] and not log.get("allow_rollup_hdrs")
    assert not log.get("allow_msg_schedules")
    assert timers["allow_msg_schedules"] and timers["retention"] == "workqueue"


async def test_each_firing_deposits_one_work_with_two_schedulers_and_none_after_removal(nats_url, client):
    # Given two schedulers (two servers) and a schedule firing every second
    async with running(run_scheduler, nats_url, count=2):
        added = await client.add_schedule("tick", Work(pipeline="alpha", parameters={"n": 1}), every="1s")
        await eventually(lambda: _at_least(client.nc, "alpha", 4), timeout=30)
        await client.remove_schedule("tick")
        await eventually(lambda: _timer_gone_and_firings_done(client.nc, "tick"), timeout=30)
        after_removal = await deposited(client.nc, "alpha")
        # Then each firing is one work, with the id derived from its firing time: no second copy
        times = sorted(_ulid_millis(work_id) for work_id in after_removal)
        assert len(set(times)) == len(times)
        assert all(b - a >= 500 for a, b in itertools.pairwise(times))  # a second apart, not doubled
        for work_id in sorted(after_removal)[:2]:
            [deposit] = await client.history(work_id)
            assert isinstance(deposit, ev.Deposited) and deposit.by == "schedule:tick"
            assert deposit.work.user == "schedule:tick" and deposit.work.parameters == {"n": 1}
            assert work_id == sch.firing_id(added.id, deposit.work.creation)
        # And after its removal, no more (three periods later, the timer gone)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # absence has no event to wait for: watch it for 3 periods
            assert await deposited(client.nc, "alpha") == after_removal
            await asyncio.sleep(0.5)


async def test_a_scheduler_whose_stream_vanishes_starts_again_and_keeps_firing(nats_url, client):
    """A scheduler's failure (here its timer stream and consumer deleted under it; in a new
    cluster, a 503 while the stream's leader is elected) never ends it, nor `workflow
    server` with it: it starts again from the log and the schedule fires again."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_scheduler(nats_url, stop, name="resilient"))
    try:
        await client.add_schedule("again", Work(pipeline="gamma"), every="1s")
        await eventually(lambda: _at_least(client.nc, "gamma", 1), timeout=30)
        await jsapi.request(client.nc, f"STREAM.DELETE.{TIMER_STREAM}")  # the timers and the firings' consumer
        before = len(await deposited(client.nc, "gamma"))
        await eventually(lambda: _at_least(client.nc, "gamma", before + 2), timeout=60)
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_a_firing_handled_twice_deposits_once(nats_url, client):
    added = await client.add_schedule("twice", Work(pipeline="beta"), every="1h")
    scheduler = Scheduler(client)
    scheduler.schedules.observe(added, time.time())
    fired_at = time.time()
    first = await scheduler._deposit(added, fired_at)
    second = await scheduler._deposit(added, fired_at)  # a redelivery, or another server
    assert first == second and await deposited(client.nc, "beta") == {first}
    assert len(await client.history(first)) == 1


async def test_firings_while_no_scheduler_ran_are_each_deposited_when_one_starts(nats_url, client):
    async with running(run_scheduler, nats_url):
        added = await client.add_schedule("tick", Work(pipeline="alpha"), every="1s")
        await eventually(lambda: _at_least(client.nc, "alpha", 1), timeout=30)
    before = await deposited(client.nc, "alpha")
    # While no scheduler runs, the server's firings wait in the timer stream
    await eventually(lambda: _pending_at_least(client.nc, 2), timeout=30)
    waiting = {sch.firing_id(added.id, fired_at) for fired_at in await pending_firing_times(client.nc)}
    assert len(waiting) >= 2 and not waiting & before
    async with running(run_scheduler, nats_url):
        # each waiting firing is deposited, as the work whose id derives from its own time
        await eventually(lambda: _includes(client.nc, "alpha", waiting), timeout=30)
        await client.remove_schedule("tick")


async def test_the_projector_neither_folds_nor_rejects_schedule_events_and_the_audit_finds_no_gap(
    client, results_service
):
    await client.add_schedule("nightly", Work(pipeline="alpha"), cron="@daily")
    await client.remove_schedule("nightly")
    [work_id] = await client.deposit(Work(pipeline="alpha"))
    assert await client.results.count(fresh=True) == 1
    assert (await client.results.get(work_id, fresh=True)).status == "queued"
    assert (await client.results.audit())["anomalies"] == []  # the schedule's events are in `other`


# -- helpers ------------------------------------------------------------------------------


def _ulid_millis(work_id: str) -> int:
    from ulid import ULID

    return int(ULID.from_str(work_id).milliseconds)


async def _at_least(nc, pipeline: str, count: int) -> bool:
    return len(await deposited(nc, pipeline)) >= count


async def _includes(nc, pipeline: str, ids: set[str]) -> bool:
    return ids <= await deposited(nc, pipeline)


async def pending_firing_times(nc) -> list[float]:
    """The stream times of the firings waiting in the timer stream: each one's work id
    derives from it (``sch.firing_id``)."""
    state = (await jsapi.request(nc, f"STREAM.INFO.{TIMER_STREAM}"))["state"]
    times = []
    for seq in range(state["first_seq"], state["last_seq"] + 1):
        message = (await jsapi.request(nc, f"STREAM.MSG.GET.{TIMER_STREAM}", {"seq": seq})).get("message")
        if message is not None and message["subject"].startswith("wfsched.fired."):
            times.append(server_time(message["time"]))
    return times


async def _pending_at_least(nc, count: int) -> bool:
    return await pending_firings(nc) >= count


async def _timer_gone_and_firings_done(nc, name: str) -> bool:
    return not await timer_exists(nc, name) and await pending_firings(nc) == 0


def _this_minute_in(zone: str) -> str:
    """A cron firing every second of this minute and the next on the wall clock of ``zone``
    only: in UTC (8 hours away for America/Vancouver) the same fields match no time near now."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo(zone))
    later = now + timedelta(minutes=1)
    return f"* {now.minute},{later.minute} {now.hour},{later.hour} * * *"


async def test_the_server_takes_a_zone_with_a_cron_and_refuses_an_unknown_one(nats_url):
    nc = await nats.connect(nats_url)
    try:
        await ensure_timer_stream(nc)
        headers = {"Nats-Schedule": "0 0 2 * * *", "Nats-Schedule-Target": "wfsched.fired.zone",
                   "Nats-Schedule-Time-Zone": "America/Vancouver"}
        ack = json.loads((await nc.request("wfsched.timer.zone-ok", b"", headers=headers)).data)
        assert "error" not in ack, ack
        refused = json.loads((await nc.request("wfsched.timer.zone-bad", b"", headers={
            **headers, "Nats-Schedule-Time-Zone": "Mars/Olympus"})).data)
        assert "time zone" in refused["error"]["description"], refused
        await jsapi.request(nc, f"STREAM.PURGE.{TIMER_STREAM}", {"filter": "wfsched.>"})
    finally:
        await nc.close()


async def test_a_cron_in_a_time_zone_fires_on_that_zones_clock(nats_url, client):
    # Given a cron that matches now on Vancouver's wall clock, and not for hours in UTC
    spec, zone = _this_minute_in("America/Vancouver"), "America/Vancouver"
    now = time.time()
    assert sch.next_firing(spec, now, timezone=zone) < now + 120
    assert sch.next_firing(spec, now) > now + 3600
    async with running(run_scheduler, nats_url):
        added = await client.add_schedule("local", Work(pipeline="zoned"), cron=spec, timezone=zone)
        assert [d.added for d in await client.schedules()] == [added] and added.timezone == zone
        # Then the server fires it on Vancouver's clock: works are deposited within seconds
        await eventually(lambda: _at_least(client.nc, "zoned", 2), timeout=30)
        await client.remove_schedule("local")
    for work_id in await deposited(client.nc, "zoned"):
        [deposit] = await client.history(work_id)
        assert isinstance(deposit, ev.Deposited) and deposit.by == "schedule:local"


async def test_a_zone_is_checked_before_anything_is_written_and_an_interval_takes_none(client):
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        await client.add_schedule("bad", Work(pipeline="alpha"), cron="0 0 2 * * *", timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="not to '@every 10m'"):
        await client.add_schedule("bad", Work(pipeline="alpha"), every="10m", timezone="America/Vancouver")
    assert await client.schedules() == []
