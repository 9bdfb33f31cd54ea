"""The README's tour and the tutorial, as a new user follows them: the real CLI (and the
Python snippet, as written in the docs) against a real server, each step saying what it did."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from workflow import Work

ROOT = Path(__file__).resolve().parents[2]


async def workflow_cli(*args: str, url: str, stdin: str | None = None, columns: int | None = None,
                       cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The command, run in a thread: this test's event loop keeps serving (the results
    service of the ``results_service`` fixture runs in it)."""
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    command = [sys.executable, "-m", "workflow.cli", *args, "--nats", url]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, input=stdin or "", env=env, cwd=cwd)


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(), re.DOTALL)


async def test_the_python_snippets_record_the_work_they_deposited_whatever_else_is_queued(
    client, results_service, nats_url, tmp_path
):
    # Where the tour stands when a reader gets there: sample-pipeline works queued (one just re-queued).
    others = await client.deposit([Work(pipeline="sample-pipeline", parameters={"a": 3, "b": 4}) for _ in range(2)])
    for document in (ROOT / "README.md", ROOT / "docs/tutorial.md"):
        [snippet] = [block for block in python_blocks(document) if "workflow.connect()" in block]
        ran = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60,
            env={**os.environ, "WORKFLOW_NATS_URL": nats_url}, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        assert "status='success'" in ran.stdout and "results={'sum': 3}" in ran.stdout, (document, ran.stdout)
    for work_id in others:
        assert (await client.get(work_id)).status == "queued"  # nobody else's work was taken
    assert (await client.results.pipelines(fresh=True))["python-tour"]["success"] == 2


async def test_requeue_of_a_succeeded_work_asks_first_and_says_what_it_does(client, nats_url):
    [done, failed] = await client.deposit([Work(pipeline="p", retries=0), Work(pipeline="p", retries=0)])
    work = await client.withdraw("p", timeout=10)
    assert work is not None and work.id == done
    await client.succeed(work, {"sum": 7})
    work = await client.withdraw("p", timeout=10)
    assert work is not None and work.id == failed
    await client.fail(work, "error", "ZeroDivisionError: division by zero", retry=False)

    refused = await workflow_cli("requeue", done, "--priority", "5", url=nats_url)  # no answer: not a yes
    assert refused.returncode == 1
    assert f"{done} succeeded" in refused.stderr and "runs again" in refused.stderr
    assert "nothing was re-queued" in refused.stderr and "--force" in refused.stderr
    assert (await client.get(done)).status == "success"
    assert (await client.get(done)).results == {"sum": 7}

    declined = await workflow_cli("requeue", done, url=nats_url, stdin="n\n")
    assert declined.returncode == 1 and (await client.get(done)).status == "success"

    agreed = await workflow_cli("requeue", done, "--priority", "5", url=nats_url, stdin="y\n")
    assert agreed.returncode == 0, agreed.stderr
    assert f"requeued {done}: it succeeded and runs again; queued at priority 5" in agreed.stdout
    assert (await client.get(done)).status == "queued"

    retried = await workflow_cli("requeue", failed, url=nats_url)  # a failed work is retried without a question
    assert retried.returncode == 0, retried.stderr
    assert f"requeued {failed}: it failed and runs again" in retried.stdout and "?" not in retried.stderr

    work = await client.withdraw("p", timeout=10)
    assert work is not None
    await client.succeed(work, {"sum": 8})
    forced = await workflow_cli("requeue", work.id or "", "--force", url=nats_url)
    assert forced.returncode == 0 and "runs again" in forced.stdout and "?" not in forced.stderr

    moved = await workflow_cli("requeue", work.id or "", "--priority", "2", url=nats_url)  # queued: moved, no question
    assert moved.returncode == 0 and "queued, now at priority 2" in moved.stdout


async def test_replay_until_before_the_first_event_says_so_and_when_that_is(client, nats_url, tmp_path):
    await client.deposit(Work(pipeline="p"))
    result = await workflow_cli("replay", "--db", "audit.duckdb", "--until", "2020-11-25T12:00:00", url=nats_url,
                                cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())  # rich wraps long lines
    assert said.startswith("replaying") is False  # no progress bar for nothing: the line is the answer
    assert ("nothing replayed: 2020-11-25 12:00:00.000Z (2020-11-25T12:00:00 has no zone: read as UTC) is before "
            "the log's first event (20") in said
    assert "audit.duckdb holds no works" in said

    result = await workflow_cli("replay", "--db", "later.duckdb", "--until", "2099-01-01T00:00:00+01:00",
                                url=nats_url, cwd=tmp_path, columns=200)
    assert result.returncode == 0, result.stderr
    assert "into later.duckdb: the state at 2098-12-31 23:00:00.000Z\n" in result.stdout  # named a zone: no note

    again = await workflow_cli("replay", "--db", "audit.duckdb", url=nats_url, cwd=tmp_path)
    assert again.returncode == 1 and "audit.duckdb exists" in again.stderr
    assert again.stdout == ""  # no progress bar before the refusal


async def test_ls_and_pipelines_stay_readable_in_80_columns(client, results_service, nats_url):
    ids = await client.deposit([Work(pipeline="sample-pipeline", user="ann") for _ in range(2)])
    await client.cancel(ids[0], reason="the longest status, for the widest row")
    for command in (("ls", "--pipeline", "sample-pipeline"), ("pipelines",), ("buckets",), ("history", ids[0])):
        shown = await workflow_cli(*command, url=nats_url, columns=80)
        assert shown.returncode == 0, shown.stderr
        assert "…" not in shown.stdout, shown.stdout
        assert max(len(line) for line in shown.stdout.splitlines()) <= 80, shown.stdout
        assert "sample-pipeline" in shown.stdout
    assert "waiting" in (await workflow_cli("pipelines", url=nats_url, columns=80)).stdout
    wide = (await workflow_cli("ls", url=nats_url, columns=160)).stdout
    assert "stopped (UTC)" in wide and "ann" in wide


def test_deposit_help_names_its_argument_and_what_json_prints():
    shown = subprocess.run([sys.executable, "-m", "workflow.cli", "deposit", "--help"], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "COLUMNS": "100"}).stdout
    assert "PIPELINE" in shown
    assert "new ids as one JSON list" in shown


async def test_the_workers_finish_line_names_a_failures_error(client, nats_url):
    await client.deposit(Work(pipeline="p", retries=0))
    ran = await workflow_cli("run", "p", "--function", "workflow.examples.fail", "--lives", "1", url=nats_url)
    assert ran.returncode == 0, ran.stderr
    [finish] = [line for line in ran.stderr.splitlines() if " finish " in line]
    assert "outcome=failed" in finish and finish.endswith("error=RuntimeError: this work always fails")

    await client.deposit(Work(pipeline="slow", parameters={"seconds": 30}, timeout=1, retries=0))
    ran = await workflow_cli("run", "slow", "--function", "workflow.examples.sleep", "--lives", "1", url=nats_url)
    assert ran.returncode == 0, ran.stderr
    [finish] = [line for line in ran.stderr.splitlines() if " finish " in line]
    assert "outcome=timeout" in finish
    assert finish.endswith("error=ran past its timeout of 1s; its process group was killed")


def test_the_tour_and_the_tutorial_agree():
    readme, tutorial = (ROOT / "README.md").read_text(), (ROOT / "docs/tutorial.md").read_text()
    for text in (readme, tutorial):
        assert "total / waiting / queued / running / success / failure / cancelled" in text
        assert "--port 4333" in text and "next heartbeat" not in text.split("## Architecture")[0]
        assert "hears the `Cancelled` event" in text
        assert "--lives 3" in text  # four deposited, one cancelled while queued
    tour = readme[readme.index("## A 5-minute tour"):readme.index("### The operator's view")]
    assert tour.index("workflow cancel ID") < tour.index("workflow run sample-pipeline")  # cancelled while queued
    assert all('"python-tour"' in block for block in python_blocks(ROOT / "README.md") if "deposit(" in block)
