"""Shared fixtures: a real nats-server per test, on a random port, with a temp store."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

import workflow
from workflow.server import EmbeddedNats, prepare_log

# Short leases and backoffs keep crash and retry tests fast; production defaults are
# 30 s and 5 s. Set before any client reads them.
os.environ.setdefault("WORKFLOW_LEASE_SECONDS", "1.5")
os.environ.setdefault("WORKFLOW_RETRY_BACKOFF", "0.1")


PYTEST_OWN_VARIABLES = {"PYTEST_CURRENT_TEST"}  # pytest itself names the running phase in it


@pytest.fixture(autouse=True)
def environment_left_as_found():
    """Fail a test that leaves ``os.environ`` changed: every later test in its process
    would run with another setting (another lease, another server) and pass or fail by
    the order the tests run in. Change it with ``monkeypatch.setenv`` (undone before this
    check) or pass the setting to the process or client that needs it."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = sorted(name for name in before.keys() | after.keys()
                     if before.get(name) != after.get(name) and name not in PYTEST_OWN_VARIABLES)
    if changed:
        os.environ.clear()
        os.environ.update(before)  # the next test starts clean either way
        pytest.fail("the test left os.environ changed: "
                    + ", ".join(f"{name}: {before.get(name)!r} -> {after.get(name)!r}" for name in changed))


@pytest.fixture
def nats_server(tmp_path: Path):
    """A fresh nats-server with JetStream (port from its log), stopped after the test."""
    server = EmbeddedNats(tmp_path / "nats", port=-1).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nats_url(nats_server: EmbeddedNats) -> str:
    """URL of a fresh server whose WORKFLOW stream is applied."""
    await prepare_log(nats_server.url)
    return nats_server.url


@pytest.fixture
async def client(nats_url: str):
    async with workflow.connect(nats_url) as c:
        yield c


async def eventually(check, timeout: float = 10.0, interval: float = 0.05):
    """Await ``check()`` until it returns a truthy value (returned), or fail after timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


async def results_answering(client) -> bool:
    """True once a results service answers on the client's server."""
    from workflow.core.errors import WorkflowError

    try:
        await client.results.position()
        return True
    except WorkflowError:
        return False


@pytest.fixture
async def results_service(nats_url: str, client, tmp_path: Path):
    """The projector + results service running in this process; yields its DuckDB path."""
    from workflow.results.service import run_projector_service

    stop = asyncio.Event()
    task = asyncio.create_task(run_projector_service(nats_url, tmp_path / "live.duckdb", stop))
    await eventually(lambda: results_answering(client))
    yield tmp_path / "live.duckdb"
    stop.set()
    await asyncio.wait_for(task, 15)


async def finish(client, work_id: str, *, ok: bool, results=None):
    """Withdraw ``work_id``'s pipeline until that work comes out, and record an outcome."""
    work = await client.withdraw(["alpha", "beta"], timeout=5)
    assert work is not None
    if ok:
        await client.succeed(work, results or {"value": 1}, products=["out.h5"])
    else:
        await client.fail(work, "error", "boom", retry=False)
    return work


@contextlib.asynccontextmanager
async def running(follower, url: str, count: int = 1):
    """``count`` copies of a server-side follower (``run_scheduler``, ``run_resolver``: called
    as ``follower(url, stop, name=...)``) running until the block ends."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(follower(url, stop, name=f"{follower.__name__}-{i}")) for i in range(count)]
    try:
        yield
    finally:
        stop.set()
        done, stuck = await asyncio.wait(tasks, timeout=15)
        for task in done:
            task.result()  # a follower's error is the test's
        if stuck:
            raise AssertionError(f"{follower.__name__} did not stop within 15 s; where each task waits:\n"
                                 + where_tasks_wait())


def where_tasks_wait() -> str:
    """Every pending task's stack, innermost frame last: what a hang report needs."""
    import io

    out = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task() and not task.done():
            task.print_stack(limit=12, file=out)
    return out.getvalue()
