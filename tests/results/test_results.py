"""The projector and the results service against a real nats-server."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

import workflow
from conftest import eventually, finish, results_answering
from workflow.core.errors import NotFoundError, ValidationError, WorkflowError
from workflow.results import database
from workflow.results.columns import WORK_COLUMNS
from workflow.results.projection import row_to_work
from workflow.results.service import run_projector_service


async def test_the_results_service_answers_every_filter(client, results_service):
    now = time.time()
    alpha = [workflow.Work(pipeline="alpha", parameters={"i": i}, tags=["a", f"n{i}"], event=[100 + i],
                           user="ann" if i % 2 else "bob", site="chime" if i < 2 else "local", priority=5 - i)
             for i in range(4)]
    beta = [workflow.Work(pipeline="beta", tags=["b"], creation=now - 3600)]
    ids = await client.deposit(alpha + beta)
    done = await finish(client, ids[0], ok=True, results={"snr": 12.5})
    failed = await finish(client, ids[1], ok=False)
    await client.cancel(ids[2])
    results = client.results

    assert await results.count(fresh=True) == 5
    assert await results.count(pipeline="alpha") == 4
    assert await results.count(status="queued") == 2
    assert await results.count(status=["success", "failure"]) == 2
    assert await results.count(site="chime") == 2
    assert await results.count(user="ann") == 2
    assert await results.count(tags="a") == 4
    assert await results.count(tags=["a", "n3"]) == 1
    assert await results.count(event=[101, 102, 999]) == 2
    assert await results.count(since=now - 60) == 4
    assert await results.count(until=now - 60) == 1
    assert await results.count(pipeline="alpha", status="cancelled") == 1

    assert await results.pipelines() == {
        "alpha": {"total": 4, "waiting": 0, "queued": 1, "running": 0, "success": 1, "failure": 1, "cancelled": 1},
        "beta": {"total": 1, "waiting": 0, "queued": 1, "running": 0, "success": 0, "failure": 0, "cancelled": 0},
    }
    works = await results.query(pipeline="alpha", order="priority")
    assert [w.priority for w in works] == [2, 3, 4, 5]
    assert [w.id for w in await results.query(order="creation", limit=2, offset=1)] == [ids[0], ids[1]]
    assert await results.query(status="success", fields=["id", "results", "products"]) == [
        {"id": done.id, "results": {"snr": 12.5}, "products": ["out.h5"]}
    ]
    assert await results.get(failed.id) == await client.get(failed.id)
    assert [r.event for r in await results.history(done.id)] == await client.history(done.id)


async def test_a_fresh_query_sees_a_write_made_just_before(client, results_service):
    for _ in range(5):
        [work_id] = await client.deposit(workflow.Work(pipeline="alpha"))
        assert (await client.results.get(work_id, fresh=True)).status == "queued"


async def test_a_fresh_read_after_a_quiet_spell_does_not_wait_for_the_next_batch(client, results_service):
    """A lone event used to sit in the projector's buffer until a batch filled or a second
    passed; a reader waiting for it makes it a batch at once (the web UI's live counts
    and a page after an action read fresh)."""
    await client.deposit(workflow.Work(pipeline="alpha"))
    await client.results.count(fresh=True)
    took = []
    for _ in range(3):
        await client.deposit(workflow.Work(pipeline="alpha"))
        start = time.perf_counter()
        await client.results.count(fresh=True)
        took.append(time.perf_counter() - start)
    assert min(took) < 0.5, took  # the old wait was a second every time


async def test_bad_filters_are_refused_with_the_field_named(client, results_service):
    with pytest.raises(ValidationError, match="status"):
        await client.results.count(status="finished")
    with pytest.raises(ValidationError, match="pipeline"):
        await client.results.query(pipeline="no spaces; DROP TABLE works")
    with pytest.raises(ValidationError, match="order"):
        await client.results.query(order="parameters")
    with pytest.raises(ValidationError, match="fields"):
        await client.results.query(fields=["id", "secret"])
    with pytest.raises(ValidationError, match="limit"):
        await client.results.query(limit=10**9)
    with pytest.raises(ValidationError, match="since"):
        await client.results.query(since="yesterday")
    with pytest.raises(NotFoundError):
        await client.results.get("01JNOSUCHWORK0000000000000")


async def test_without_a_projector_the_client_says_so(client):
    with pytest.raises(WorkflowError, match="no results service"):
        await client.results.count()


async def test_the_live_tables_equal_the_fold_of_the_log(client, tmp_path, nats_url):
    stop = asyncio.Event()
    path = tmp_path / "live.duckdb"
    task = asyncio.create_task(run_projector_service(nats_url, path, stop))
    await eventually(lambda: results_answering(client))
    ids = await client.deposit([workflow.Work(pipeline="alpha", parameters={"i": i}) for i in range(6)])
    await finish(client, ids[0], ok=True)
    await finish(client, ids[1], ok=False)
    await client.requeue(ids[1], priority=5)
    await client.cancel(ids[3])
    await client.results.count(fresh=True)
    stop.set()
    await asyncio.wait_for(task, 15)
    con = database.connect(path, read_only=True)
    columns = ", ".join(database.quote(c) for c in WORK_COLUMNS)
    rows = [dict(zip(WORK_COLUMNS, r, strict=True)) for r in con.execute(f"SELECT {columns} FROM works").fetchall()]
    assert {row["id"]: row_to_work(row) for row in rows} == {i: await client.get(i) for i in ids}
    [(events, last)] = con.execute("SELECT count(*), max(seq) FROM events").fetchall()
    assert con.execute("SELECT seq FROM checkpoint").fetchall() == [(last,)]
    assert events == last  # every event of the log, each once
    con.close()


async def test_an_export_writes_parquet_files_that_hold_the_tables(client, results_service, tmp_path):
    from workflow.results.export import download

    await client.deposit([workflow.Work(pipeline="alpha") for _ in range(3)])
    await client.results.count(fresh=True)
    _, files = await download(client.nc, tmp_path / "export")
    assert sorted(p.name for p in files) == [
        "checkpoint.parquet", "events.parquet", "rejected.parquet", "works.parquet"
    ]
    con = database.connect(":memory:")
    assert con.execute(f"SELECT count(*) FROM '{tmp_path}/export/works.parquet'").fetchall() == [(3,)]
    with pytest.raises(ValidationError, match="already exist"):
        await download(client.nc, tmp_path / "export")


async def test_the_projector_keeps_up_with_writes_while_it_runs(client, results_service):
    for round_ in range(3):
        await client.deposit([workflow.Work(pipeline="beta") for _ in range(50)])
        await eventually(functools.partial(_count_is, client, 50 * (round_ + 1)))


async def _count_is(client, expected: int) -> bool:
    return await client.results.count() == expected


async def test_works_are_found_by_the_start_of_their_id(client, results_service):
    ids = await client.deposit([workflow.Work(pipeline="alpha") for _ in range(3)])
    assert await client.results.count(id_prefix=ids[1], fresh=True) == 1
    assert [w.id for w in await client.results.query(id_prefix=ids[2][:-1] + ids[2][-1])] == [ids[2]]
    assert await client.results.count(id_prefix=ids[0][:6]) == 3  # made within the same second
    assert await client.results.count(id_prefix="ZZZZ") == 0
    with pytest.raises(ValidationError, match="id_prefix"):
        await client.results.count(id_prefix="01J%")


async def test_works_are_found_by_a_work_they_wait_on(client, results_service):
    first, second, unrelated = await client.deposit([workflow.Work(pipeline="alpha") for _ in range(3)])
    [after_first] = await client.deposit(workflow.Work(pipeline="beta", precursors=[first]))
    [after_both] = await client.deposit(workflow.Work(pipeline="gamma", precursors=[second, first]))
    results = client.results
    assert {w.id for w in await results.query(precursor=first, fresh=True)} == {after_first, after_both}
    assert await results.count(precursor=first) == 2
    assert [row["id"] for row in await results.query(precursor=second, fields=["id"])] == [after_both]
    assert await results.count(precursor=unrelated) == 0
    assert await results.count(precursor=after_both) == 0  # it waits on others; none waits on it
    assert await results.count(precursor=first, pipeline="beta") == 1  # with the other filters
    assert await results.count(precursor=first[:-1]) == 0  # a whole id, not a prefix


async def test_throughput_counts_finished_works_per_minute(client, results_service):
    ids = await client.deposit([workflow.Work(pipeline="alpha") for _ in range(3)])
    await finish(client, ids[0], ok=True)
    await finish(client, ids[1], ok=False)
    now = time.time()
    per_minute = await client.results.throughput(fresh=True)
    assert len(per_minute) == 60 and per_minute[-1] == 2 and sum(per_minute) == 2
    assert await client.results.throughput(minutes=5, pipeline="beta") == [0] * 5
    assert (await client.results.throughput(minutes=5, pipeline=["alpha", "beta"]))[-1] == 2
    assert sum(await client.results.throughput(minutes=10, until=now + 3600)) == 0  # an hour later: gone
    assert (await client.results.throughput(minutes=2, until=now + 60))[0] == 2  # a minute later: one back
    with pytest.raises(ValidationError, match="minutes"):
        await client.results.throughput(minutes=0)
