"""Crash safety and replays: a SIGKILLed projector resumes exactly; --until gives the past."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import duckdb
import pytest

import workflow
from conftest import eventually
from workflow.core.errors import WorkflowError
from workflow.results import database
from workflow.results.columns import WORK_COLUMNS
from workflow.results.projection import row_to_work
from workflow.results.projector import Projector, replay

WORKFLOW = str(Path(sys.executable).parent / "workflow")


def works_table(path: Path) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT * FROM works ORDER BY id").fetchall()
    finally:
        con.close()


def start_projector(url: str, db: Path, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "WORKFLOW_PROJECTOR_BATCH": "50"}  # many small transactions: a kill lands mid-stream
    return asyncio.create_subprocess_exec(
        WORKFLOW, "projector", "--db", str(db), "--nats", url, stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT,
        env=env,
    )


async def position(client) -> int:
    try:
        return await client.results.position()
    except WorkflowError:
        return 0


#: Deadlines of the SIGKILL test: a projector starting and catching up on a machine whose
#: cores are all busy (``make test-under-load``) took more than 30 s.
LOADED = 120


@pytest.mark.timeout(600)
async def test_a_projector_killed_with_sigkill_resumes_where_it_was_and_ends_exact(client, nats_url, tmp_path):
    db = tmp_path / "live.duckdb"
    writing = True
    ids: list[str] = []

    async def write() -> None:
        while writing:
            works = [workflow.Work(pipeline="alpha", parameters={"n": len(ids)}) for _ in range(40)]
            batch = await client.deposit(works)
            ids.extend(batch)
            await client.cancel(batch[0])

    writer = asyncio.create_task(write())
    projector = None
    try:
        projector = await start_projector(nats_url, db, tmp_path / "projector.log")
        await eventually(lambda: _beyond(client, 400), timeout=LOADED)
        projector.send_signal(signal.SIGKILL)  # while events keep arriving and batches are being written
        assert await projector.wait() == -signal.SIGKILL
        killed_at = len(ids)

        projector = await start_projector(nats_url, db, tmp_path / "projector.log")
        await eventually(lambda: _beyond(client, 2 * 400), timeout=LOADED)
        writing = False
        await writer
        assert len(ids) > killed_at
        last = (await client.nc.jetstream().stream_info("WORKFLOW")).state.last_seq
        await eventually(lambda: _reached(client, last), timeout=LOADED)
        projector.send_signal(signal.SIGTERM)
        assert await projector.wait() == 0
    finally:  # a failed run must not leave a projector behind (it would outlive the suite)
        writing = False
        if projector is not None and projector.returncode is None:
            projector.kill()
            await projector.wait()

    con = duckdb.connect(str(db), read_only=True)
    [(events, distinct, first, final)] = con.execute(
        "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM events"
    ).fetchall()
    assert (events, distinct, first, final) == (last, last, 1, last)  # none twice, none skipped
    assert con.execute("SELECT seq FROM checkpoint").fetchall() == [(last,)]
    columns = ", ".join(database.quote(c) for c in WORK_COLUMNS)
    sample = con.execute(f"SELECT {columns} FROM works ORDER BY random() LIMIT 20").fetchall()
    assert con.execute("SELECT count(*) FROM works").fetchall() == [(len(ids),)]
    con.close()
    for row in sample:
        work = row_to_work(dict(zip(WORK_COLUMNS, row, strict=True)))
        assert work == await client.get(work.id)
    fresh = tmp_path / "replayed.duckdb"
    assert await replay(client.nc, fresh) == last
    assert works_table(db) == works_table(fresh)


async def _beyond(client, seq: int) -> bool:
    return await position(client) >= seq


async def _reached(client, seq: int) -> bool:
    return await position(client) == seq


async def test_a_replay_until_a_moment_gives_the_state_of_every_work_at_that_moment(client, results_service, tmp_path):
    # Mid-life: one work finished, one running, one failed and waiting for its retry, one
    # cancelled, one still queued
    done, held, retried, cancelled, queued = await client.deposit(
        [workflow.Work(pipeline=f"p{n}", retries=2) for n in range(5)]
    )
    work = await client.withdraw("p0", timeout=10)
    await client.succeed(work, {"answer": 42}, products=["a.h5"])
    running = await client.withdraw("p1", timeout=10)
    failing = await client.withdraw("p2", timeout=10)
    await client.fail(failing, "error", "disk full")
    await client.cancel(cancelled, reason="not needed")
    # what the live read model said then
    said = {work_id: await client.results.get(work_id, fresh=True)
            for work_id in (done, held, retried, cancelled, queued)}
    assert [said[w].status for w in (done, held, retried, cancelled, queued)] == [
        "success", "running", "queued", "cancelled", "queued"]
    moment = time.time()
    # Later: every work moves on, and one more arrives
    await client.succeed(running, {"answer": 7})
    again = await client.withdraw("p2", timeout=15)
    await client.succeed(again, {"answer": 1})
    await client.requeue(done, reason="rerun")
    await client.deposit(workflow.Work(pipeline="p4"))

    await replay(client.nc, tmp_path / "then.duckdb", until_time=moment)
    then = {work.id: work for work in _works(tmp_path / "then.duckdb")}
    assert then == said  # every column of every work, as the live read model had it then


def _works(path: Path) -> list[workflow.Work]:
    columns = ", ".join(database.quote(c) for c in WORK_COLUMNS)
    return [row_to_work(dict(zip(WORK_COLUMNS, row, strict=True)))
            for row in _query(path, f"SELECT {columns} FROM works")]


async def test_a_replay_refuses_to_overwrite_a_database(client, tmp_path):
    (tmp_path / "exists.duckdb").write_bytes(b"")
    try:
        await replay(client.nc, tmp_path / "exists.duckdb")
    except WorkflowError as error:
        assert "exists" in str(error)
    else:
        raise AssertionError("replay overwrote an existing file")


async def test_a_replay_of_an_empty_log_gives_empty_tables(client, tmp_path):
    assert await replay(client.nc, tmp_path / "empty.duckdb") == 0
    assert works_table(tmp_path / "empty.duckdb") == []


async def test_a_projector_refuses_a_database_that_is_ahead_of_the_log(client, tmp_path):
    con = database.connect(tmp_path / "other.duckdb")
    deposited = workflow.events.Deposited(
        work_id="01JOTHER", pipeline="alpha", time=1.0, work=workflow.Work(pipeline="alpha")
    )
    Projector(con).apply([(100, 1.0, "wf.alpha.01JOTHER.queued.local.3", workflow.events.encode(deposited))])
    try:
        await Projector(con).run(client.nc)
    except WorkflowError as error:
        assert "another log" in str(error)
    else:
        raise AssertionError("a database ahead of the log was accepted")
    finally:
        con.close()


async def test_small_batches_and_a_tiny_cache_give_the_tables_of_one_large_batch(client, tmp_path):
    # Each batch's lookups read rows while the previous batch is being written: rows of
    # that batch come from memory, older ones from the database (a second connection).
    ids = await client.deposit([workflow.Work(pipeline="alpha", parameters={"n": n}) for n in range(12)])
    for _ in range(6):
        work = await client.withdraw("alpha", timeout=5)
        await client.succeed(work, {"answer": 1.5, "n": work.parameters["n"]})
    await client.cancel(ids[-1])
    await client.deposit([workflow.Work(pipeline="alpha") for _ in range(3)])
    last = (await client.nc.jetstream().stream_info("WORKFLOW")).state.last_seq

    small = tmp_path / "small.duckdb"
    con = database.connect(small)
    try:
        assert await Projector(con, batch_size=3, cache_size=1).run(client.nc, until_seq=last, linger=0) == last
    finally:
        con.close()
    large = tmp_path / "large.duckdb"
    assert await replay(client.nc, large) == last
    assert works_table(small) == works_table(large)
    assert sorted(status for (status,) in _query(small, "SELECT status FROM works")) == (
        ["cancelled"] + ["queued"] * 8 + ["success"] * 6
    )
    assert _query(small, "SELECT * FROM events ORDER BY seq") == _query(large, "SELECT * FROM events ORDER BY seq")


def _query(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


async def test_a_reader_waiting_for_a_position_cuts_the_projectors_linger_short(client, tmp_path):
    # The projector lets a live batch gather before writing it (longer under load); a
    # reader that must see a write (fresh=True, after=SEQ) must not wait for that.
    con = database.connect(tmp_path / "live.duckdb")
    projector = Projector(con)
    stop = asyncio.Event()
    running = asyncio.create_task(projector.run(client.nc, stop, linger=600))  # batches would wait 10 min
    try:
        await client.deposit(workflow.Work(pipeline="alpha"))
        last = (await client.nc.jetstream().stream_info("WORKFLOW")).state.last_seq

        async def lingering() -> bool:
            return projector.lingering

        await eventually(lingering, timeout=60)  # the deposit is read, its batch gathering
        assert projector.position < last
        assert await projector.wait_for(last, timeout=60)  # well before the 10-minute linger ends
        assert projector.position == last
    finally:
        stop.set()
        await running
        con.close()
