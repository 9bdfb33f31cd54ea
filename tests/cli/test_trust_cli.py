"""``workflow export DIR`` and ``workflow audit``, as real subprocesses against a real server."""

from __future__ import annotations

import json

import duckdb
from test_results_cli import cli

import workflow


async def test_export_writes_the_tables_as_parquet_in_a_local_directory(client, results_service, nats_url, tmp_path):
    await client.deposit([workflow.Work(pipeline="alpha") for _ in range(2)])
    await client.results.count(fresh=True)
    code, out, err = await cli("export", str(tmp_path / "here"), "--nats", nats_url)
    assert code == 0, err
    assert sorted(line.rsplit("/", 1)[1] for line in out.split()) == [
        "checkpoint.parquet", "events.parquet", "rejected.parquet", "works.parquet"
    ]
    assert duckdb.connect().execute(f"SELECT count(*) FROM '{tmp_path}/here/works.parquet'").fetchall() == [(2,)]
    code, _, err = await cli("export", str(tmp_path / "here"), "--nats", nats_url)
    assert code == 2 and "already exist" in err


async def test_audit_exits_0_when_clean_and_1_with_its_anomalies_as_json(client, results_service, nats_url):
    await client.deposit([workflow.Work(pipeline="alpha")])
    code, out, _ = await cli("audit", "--nats", nats_url)
    assert code == 0 and out.startswith("clean: no anomaly up to sequence")
    await client.nc.jetstream().publish("wf.alpha.01JNOWORK.started", b"not json")
    code, out, _ = await cli("audit", "--json", "--nats", nats_url)
    answer = json.loads(out)
    assert code == 1 and answer["total"] == 1
    assert answer["anomalies"][0]["kind"] == "rejected" and answer["anomalies"][0]["seq"] == 2
