"""The process pool: warm children are reused, and a child that cannot be trusted any
more (timed out, cancelled, dead) or has run its share of works is replaced."""

from __future__ import annotations

import asyncio
import os

import pytest

from workflow.worker.pool import ProcessIsolation
from workflow.worker.runner import FunctionCall

pytestmark = pytest.mark.timeout(60)

GETPID = FunctionCall(function="os.getpid")


async def pid_of(pool: ProcessIsolation) -> int:
    outcome = await (await pool.start(GETPID)).outcome()
    assert outcome.status == "succeeded", outcome
    return int(outcome.results["value"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_warm_child_runs_one_work_after_another():
    pool = ProcessIsolation(1)
    await pool.open()
    try:
        first = await pid_of(pool)
        assert [await pid_of(pool) for _ in range(5)] == [first] * 5
        assert first != os.getpid()
    finally:
        await pool.close()


async def test_a_child_killed_at_a_timeout_is_replaced_and_the_next_work_runs_in_a_fresh_one():
    pool = ProcessIsolation(1)
    await pool.open()
    try:
        warm = await pid_of(pool)
        hung = await pool.start(FunctionCall(function="time.sleep", parameters={"secs": 60}))
        await asyncio.sleep(0.2)
        await hung.stop()  # what the worker does at a timeout or a cancel
        assert not alive(warm)
        fresh = await pid_of(pool)
        assert fresh != warm
    finally:
        await pool.close()


async def test_a_child_that_dies_is_an_ordinary_failure_and_is_replaced():
    pool = ProcessIsolation(1)
    await pool.open()
    try:
        warm = await pid_of(pool)
        outcome = await (await pool.start(FunctionCall(function="os.abort"))).outcome()  # SIGABRT, as a crash
        assert outcome.status == "failed" and "killed by signal 6" in (outcome.error or "")
        assert await pid_of(pool) != warm
    finally:
        await pool.close()


async def test_max_works_per_child_recycles_children():
    pool = ProcessIsolation(1, max_works_per_child=2)
    await pool.open()
    try:
        pids = [await pid_of(pool) for _ in range(6)]
        assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
        assert len(set(pids)) == 3
    finally:
        await pool.close()


async def test_closing_the_pool_ends_every_child():
    pool = ProcessIsolation(2)
    await pool.open()
    pid = await pid_of(pool)
    await pool.close()
    assert not alive(pid)
