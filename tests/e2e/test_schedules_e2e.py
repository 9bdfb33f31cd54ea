"""Schedules end to end: two real ``workflow server`` processes on one NATS, the real CLI.

The issue's test: a schedule firing every second for ten seconds deposits ten works (± one
at the edges), each once although two servers handle firings, and none after it is removed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deployed import end, env_for, until, workflow_process

import workflow
from workflow.core import events as ev
from workflow.log import jsapi
from workflow.log.schedules import TIMER_STREAM, server_time

pytestmark = pytest.mark.timeout(120)


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workflow.cli", *args, "--nats", url], env=env_for(url),
                          capture_output=True, text=True, timeout=60)


async def deposited(nc, pipeline: str) -> set[str]:
    info = await jsapi.request(nc, "STREAM.INFO.WORKFLOW", {"subjects_filter": f"wf.{pipeline}.*.queued.>"})
    return {subject.split(".")[2] for subject in (info["state"].get("subjects") or {})}


async def timers_settled(nc) -> bool:
    """No timer left and every firing handled (the timer stream is empty)."""
    info = await jsapi.request(nc, f"STREAM.INFO.{TIMER_STREAM}")
    return "state" in info and info["state"]["messages"] == 0


async def logged_at(nc, subject: str) -> float:
    reply = await nc.request("$JS.API.DIRECT.GET.WORKFLOW", json.dumps({"last_by_subj": subject}).encode())
    return server_time(reply.headers["Nats-Time-Stamp"])


async def test_a_schedule_every_second_for_ten_seconds_deposits_ten_works_once_each_and_none_after_removal(
    nats_url: str, tmp_path: Path
):
    # Given two workflow servers on one NATS
    servers = [
        workflow_process(["server", "--nats", nats_url, "--data-dir", str(tmp_path / f"data{i}")], env_for(nats_url),
                         tmp_path / f"server{i}.log", tmp_path)
        for i in range(2)
    ]
    try:
        async with workflow.connect(nats_url) as client:
            await until(lambda: all("scheduler live" in (tmp_path / f"server{i}.log").read_text() for i in range(2)),
                        timeout=60)
            # When a schedule firing every second runs for ten seconds, then is removed
            added = cli(nats_url, "schedule", "add", "tick", "e2e", "--every", "1s", "-P", "n=1", "--priority", "4")
            assert added.returncode == 0, added.stderr
            await until(lambda: _at_least(client.nc, 1), timeout=30)  # the first firing came through
            await asyncio.sleep(max(0.0, 10 - (time.time() - await logged_at(client.nc, "wf._schedule.tick.added"))))
            removed = cli(nats_url, "schedule", "rm", "tick")
            assert removed.returncode == 0, removed.stderr
            await until(lambda: timers_settled(client.nc), timeout=30)
            works = await deposited(client.nc, "e2e")
            # Then one work per firing: as many as whole seconds between the add and the remove, ± 1
            seconds = await logged_at(client.nc, "wf._schedule.tick.removed") - await logged_at(
                client.nc, "wf._schedule.tick.added")
            assert abs(len(works) - int(seconds)) <= 1, (len(works), seconds)
            fired_at = []
            for work_id in works:  # each deposited once, by the schedule, as given
                [deposit] = await client.history(work_id)
                assert isinstance(deposit, ev.Deposited) and deposit.by == "schedule:tick"
                assert deposit.work.parameters == {"n": 1} and deposit.work.priority == 4
                fired_at.append(deposit.work.creation)  # a firing's work is created at the firing's time
            # One work per firing time, a period apart: a second timer, or a firing deposited
            # twice under two times, puts two works within a fraction of a period
            fired_at.sort()
            gaps = [round(later - earlier, 3) for earlier, later in itertools.pairwise(fired_at)]
            assert all(gap > 0.5 for gap in gaps), (gaps, seconds)
            # And none after its removal (watched for three periods: absence has no event to wait for)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                assert await deposited(client.nc, "e2e") == works
                await asyncio.sleep(0.5)
            listed = cli(nats_url, "schedule", "ls", "--json")
            assert listed.returncode == 0 and json.loads(listed.stdout) == []
    finally:
        for server in servers:
            end(server)


async def test_schedule_commands_refuse_bad_input_and_unknown_names_with_one_line(nats_url: str):
    bad = cli(nats_url, "schedule", "add", "x", "e2e", "--cron", "0 0 2 * *")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "6 fields" in bad.stderr
    both = cli(nats_url, "schedule", "add", "x", "e2e", "--every", "1s", "--cron", "@daily")
    assert both.returncode == 2 and "exactly one" in both.stderr
    unknown = cli(nats_url, "schedule", "rm", "nothing")
    assert unknown.returncode == 1 and "no schedule named 'nothing'" in unknown.stderr
    assert cli(nats_url, "schedule", "add", "nightly", "e2e", "--cron", "0 0 2 * * *").returncode == 0
    twice = cli(nats_url, "schedule", "add", "nightly", "e2e", "--every", "1h")
    assert twice.returncode == 1 and "exists" in twice.stderr
    [listed] = json.loads(cli(nats_url, "schedule", "ls", "--json").stdout)
    assert listed["name"] == "nightly" and listed["schedule"] == "0 0 2 * * *" and listed["pipeline"] == "e2e"


async def _at_least(nc, count: int) -> bool:
    return len(await deposited(nc, "e2e")) >= count


async def test_a_cron_given_with_tz_fires_on_that_zones_clock_and_ls_shows_the_zone(nats_url: str, tmp_path: Path):
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    # A cron that matches this minute and the next on Vancouver's wall clock only (UTC is 7-8 hours away)
    now = datetime.now(ZoneInfo("America/Vancouver"))
    later = now + timedelta(minutes=1)
    spec = f"* {now.minute},{later.minute} {now.hour},{later.hour} * * *"
    bad = cli(nats_url, "schedule", "add", "x", "e2e", "--cron", spec, "--tz", "America/Vancover")
    assert bad.returncode == 2 and "unknown time zone 'America/Vancover'" in bad.stderr, bad.stderr
    server = workflow_process(["server", "--nats", nats_url, "--data-dir", str(tmp_path / "data")], env_for(nats_url),
                              tmp_path / "server.log", tmp_path)
    try:
        async with workflow.connect(nats_url) as client:
            await until(lambda: "scheduler live" in (tmp_path / "server.log").read_text(), timeout=60)
            added = cli(nats_url, "schedule", "add", "local", "e2e", "--cron", spec, "--tz", "America/Vancouver")
            assert added.returncode == 0 and "(America/Vancouver)" in added.stdout, added.stderr
            [listed] = json.loads(cli(nats_url, "schedule", "ls", "--json").stdout)
            assert listed["timezone"] == "America/Vancouver" and listed["next_firing"] < time.time() + 120
            table = subprocess.run([sys.executable, "-m", "workflow.cli", "schedule", "ls", "--nats", nats_url],
                                   env={**env_for(nats_url), "COLUMNS": "250"}, capture_output=True, text=True,
                                   timeout=60)
            zone_name = now.strftime("%Z")  # PST or PDT: the next firing in the zone, then in UTC
            assert "America/Vancouver" in table.stdout and zone_name in table.stdout and "Z)" in table.stdout, table
            await until(lambda: _at_least(client.nc, 2), timeout=30)  # fired by the server, on Vancouver's clock
            assert cli(nats_url, "schedule", "rm", "local").returncode == 0
    finally:
        end(server)
