"""The results commands of the CLI, run as real subprocesses against a real server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import workflow

WORKFLOW = str(Path(sys.executable).parent / "workflow")


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        WORKFLOW, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:  # a command that hung is not left running after the test
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, out.decode(), err.decode()


async def test_ls_count_and_pipelines_answer_from_the_results_service(client, results_service, nats_url):
    ids = await client.deposit([workflow.Work(pipeline="alpha", user="ann") for _ in range(3)])
    await client.deposit(workflow.Work(pipeline="beta"))
    await client.cancel(ids[0])
    await client.results.count(fresh=True)

    code, out, _ = await cli("ls", "--pipeline", "alpha", "--json", "--nats", nats_url)
    assert code == 0
    assert sorted(work["id"] for work in json.loads(out)) == sorted(ids)
    code, out, _ = await cli("ls", "--status", "cancelled", "--nats", nats_url)
    assert code == 0 and ids[0] in out and "cancelled" in out and ids[1] not in out
    code, out, _ = await cli("ls", "--limit", "1", "--json", "--nats", nats_url)
    assert len(json.loads(out)) == 1
    assert await cli("count", "--pipeline", "alpha", "--status", "queued", "--json", "--nats", nats_url) == (
        0, '{"count":2}\n', ""
    )
    code, out, _ = await cli("count", "--nats", nats_url)
    assert out.strip() == "4"
    code, out, _ = await cli("pipelines", "--json", "--nats", nats_url)
    assert json.loads(out)["alpha"] == {
        "total": 3, "waiting": 0, "queued": 2, "running": 0, "success": 0, "failure": 0, "cancelled": 1,
    }
    code, out, _ = await cli("pipelines", "--nats", nats_url)
    assert code == 0 and "alpha" in out and "beta" in out


async def test_bad_input_is_one_line_and_a_nonzero_exit(client, results_service, nats_url):
    code, out, err = await cli("ls", "--status", "finished", "--nats", nats_url)
    assert code == 2 and err.startswith("error: invalid status") and err.count("\n") == 1 and out == ""
    code, _, err = await cli("ls", "--since", "last tuesday", "--nats", nats_url)
    assert code == 2 and "since" in err


async def test_without_a_results_service_ls_says_what_to_start(nats_url):
    code, _, err = await cli("count", "--nats", nats_url)
    assert code == 1 and "no results service" in err


async def test_replay_then_sql_and_export_work_on_the_replayed_file(client, nats_url, tmp_path):
    ids = await client.deposit([workflow.Work(pipeline="alpha") for _ in range(4)])
    await client.cancel(ids[1])
    db = tmp_path / "audit.duckdb"
    code, out, err = await cli("replay", "--db", str(db), "--nats", nats_url)
    assert code == 0, err
    assert "replayed the log up to sequence 5" in out

    query = "SELECT status, count(*) AS n FROM works GROUP BY 1 ORDER BY 1"
    code, out, _ = await cli("sql", query, "--db", str(db), "--json")
    assert code == 0 and json.loads(out) == [{"status": "cancelled", "n": 1}, {"status": "queued", "n": 3}]
    code, out, _ = await cli("sql", "SELECT type FROM events ORDER BY seq", "--db", str(db))
    assert code == 0 and out.count("deposited") == 4 and "cancelled" in out
    code, _, err = await cli("sql", "DELETE FROM works", "--db", str(db))
    assert code == 1 and "read-only" in err.lower()
    code, _, err = await cli("sql", "SELECT nonsense FROM", "--db", str(db))
    assert code == 1 and err.startswith("error:")

    code, out, err = await cli("export", "--parquet", str(tmp_path / "parquet"), "--db", str(db))
    assert code == 0, err
    code, out, _ = await cli("sql", "SELECT count(*) AS n FROM works", "--db", str(tmp_path / "parquet"), "--json")
    assert json.loads(out) == [{"n": 4}]


async def test_replay_until_an_iso_time_and_sql_on_a_missing_file(client, nats_url, tmp_path):
    await client.deposit(workflow.Work(pipeline="alpha"))
    code, out, err = await cli("replay", "--db", str(tmp_path / "past.duckdb"), "--until", "2001-01-01T00:00:00Z",
                               "--quiet", "--nats", nats_url)
    assert code == 0, err
    code, out, _ = await cli("sql", "SELECT count(*) AS n FROM works", "--db", str(tmp_path / "past.duckdb"), "--json")
    assert json.loads(out) == [{"n": 0}]
    code, _, err = await cli("sql", "SELECT 1", "--db", str(tmp_path / "missing.duckdb"))
    assert code == 2 and "does not exist" in err
    code, _, err = await cli("replay", "--db", str(tmp_path / "x.duckdb"), "--until", "soon", "--nats", nats_url)
    assert code == 2 and "until" in err


async def test_ls_and_count_user_filter_works_by_their_user(client, results_service, nats_url):
    ids = await client.deposit([workflow.Work(pipeline="alpha", user="alice"), workflow.Work(pipeline="alpha")])
    await client.results.count(fresh=True)
    code, out, err = await cli("ls", "--user", "alice", "--json", "--nats", nats_url)
    assert code == 0, err
    assert [work["id"] for work in json.loads(out)] == [ids[0]]
    assert await cli("count", "--user", "alice", "--json", "--nats", nats_url) == (0, '{"count":1}\n', "")
