"""The results service against hostile requests and the log against hostile publishes,
with a real nats-server: errors answered, nothing written on the server, anomalies found."""

from __future__ import annotations

import time

import duckdb
import msgspec
import pytest

import workflow
from conftest import finish
from workflow.core import events as ev
from workflow.core.errors import ValidationError
from workflow.core.subjects import event_subject
from workflow.results.export import download
from workflow.results.queries import ERROR_CODE_HEADER

ENDPOINTS = ["query", "count", "pipelines", "get", "history", "position", "export", "audit"]
BAD = [b"\xff\x00", b"[1,2]", b'{"nope": 1}', b'{"limit": 100000000000}', b'{"status": ["lost"]}',
       b'{"wait": -5}', b'{"min_seq": "x"}', b'{"order": "drop table"}', b'{"fields": ["id; --"]}', b"{" * 5000]


async def test_every_endpoint_answers_malformed_requests_with_an_error_and_keeps_serving(client, results_service):
    for endpoint in ENDPOINTS:
        for data in BAD:
            reply = await client.nc.request(f"workflow.results.{endpoint}", data, timeout=10)
            if endpoint == "position":  # takes no parameters: any request is a question for the position
                continue
            assert (reply.headers or {}).get(ERROR_CODE_HEADER) == "400", (endpoint, data, reply.data)
    assert await client.results.count(fresh=True) == 0


async def test_an_export_request_naming_a_server_path_is_refused_and_writes_nothing(client, results_service, tmp_path):
    target = tmp_path / "server-side"
    body = msgspec.json.encode({"directory": str(target)})
    reply = await client.nc.request("workflow.results.export", body, timeout=10)
    assert (reply.headers or {}).get(ERROR_CODE_HEADER) == "400"
    assert "unknown field `directory`" in reply.headers["Nats-Service-Error"]
    assert not target.exists()


async def test_an_export_writes_locally_parquet_files_whose_rows_equal_the_read_model(
    client, results_service, tmp_path
):
    await client.deposit([workflow.Work(pipeline="alpha", parameters={"n": n}) for n in range(5)])
    await finish(client, "", ok=True)
    await client.nc.publish("wf.alpha.01JGARBAGE.started", b"garbage")  # a rejected row to export too
    await client.nc.flush()
    await client.results.count(fresh=True)  # the projection has caught up with the log
    seq, files = await download(client.nc, tmp_path / "out")
    assert {f.name for f in files} == {"works.parquet", "events.parquet", "rejected.parquet", "checkpoint.parquet"}
    exported = duckdb.connect()
    for table, order in (("works", "id"), ("events", "seq")):
        rows = exported.execute(f"SELECT * FROM '{tmp_path}/out/{table}.parquet' ORDER BY {order}").fetchall()
        assert len(rows) == (5 if table == "works" else 7)
    works = exported.execute(f"SELECT id, status FROM '{tmp_path}/out/works.parquet' ORDER BY id").fetchall()
    assert works == sorted((w.id, w.status) for w in await client.results.query(limit=100))
    assert exported.execute(f"SELECT seq FROM '{tmp_path}/out/checkpoint.parquet'").fetchall() == [(seq,)]
    with pytest.raises(ValidationError, match="already exist"):
        await download(client.nc, tmp_path / "out")


async def audit(client) -> dict:
    return await client.results._call("audit", {}, fresh=True)


async def test_the_audit_is_clean_after_a_normal_run(client, results_service):
    await client.deposit([workflow.Work(pipeline="alpha") for _ in range(3)])
    await finish(client, "", ok=True)
    await finish(client, "", ok=False)
    answer = await audit(client)
    assert answer["anomalies"] == [] and answer["total"] == 0


async def test_the_audit_lists_raw_publishes_the_cas_would_have_refused(client, results_service):
    [work_id] = await client.deposit([workflow.Work(pipeline="alpha", retries=0)])
    done = await finish(client, work_id, ok=True)
    envelope = {"work_id": done.id, "pipeline": "alpha", "time": time.time()}
    js = client.nc.jetstream()
    second = ev.Succeeded(**envelope, attempt=1)
    await js.publish(event_subject(second), ev.encode(second))  # no CAS headers
    restart = ev.Started(**envelope, attempt=2, queue_seq=1)
    await js.publish(event_subject(restart), ev.encode(restart))
    await js.publish("wf.alpha.01JNOWORK.started", b"\xff not an event")
    [stuck] = await client.deposit([workflow.Work(pipeline="beta", timeout=1, retries=0)])
    started = ev.Started(work_id=stuck, pipeline="beta", time=time.time() - 3600, attempt=1, queue_seq=1)
    await js.publish(event_subject(started), ev.encode(started))
    again = ev.Started(work_id=stuck, pipeline="beta", time=time.time() - 3600, attempt=2, queue_seq=1)
    await js.publish(event_subject(again), ev.encode(again))
    answer = await audit(client)
    kinds = [(a["kind"], a.get("work_id")) for a in answer["anomalies"]]
    assert kinds == [("rejected", None), ("rejected", None), ("rejected", None), ("overdue", stuck),
                     ("attempts", stuck)]
    reasons = [a["detail"] for a in answer["anomalies"][:3]]
    assert reasons[0].startswith("state: Succeeded after the work ended (success)")
    assert reasons[1].startswith("state: Started after the work ended (success)")
    assert reasons[2].startswith("event: not UTF-8")
    assert (await client.results.get(done.id, fresh=True)).status == "success"
