"""``workflow cancel | requeue | delete`` on many works, as an operator types them (real processes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import workflow
from e2e.deployed import end, env_for, until, workflow_process
from workflow.core.work import Work


async def workflow_cli(*args: str, url: str, answer: str = "") -> subprocess.CompletedProcess:
    """Run the CLI off the event loop (the results service in this process must keep answering)."""
    command = [sys.executable, "-m", "workflow.cli", *args, "--nats", url]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120, input=answer)


async def test_cancel_with_neither_ids_nor_filters_or_filters_without_a_pipeline_exits_2(nats_url):
    for args, says in ((["cancel"], "name the works"), (["requeue", "--status", "failure"], "must name its pipeline"),
                       (["delete", "01J", "--pipeline", "p"], "not both")):
        result = await workflow_cli(*args, url=nats_url)
        assert result.returncode == 2, result
        assert says in result.stderr and "Traceback" not in result.stderr


async def test_a_bulk_cancel_asks_first_and_without_a_yes_changes_nothing(client, results_service, nats_url):
    ids = await client.deposit([Work(pipeline="alpha") for _ in range(3)])
    result = await workflow_cli("cancel", "--pipeline", "alpha", "--status", "queued", url=nats_url, answer="n\n")
    assert result.returncode == 1 and "cancel 3 works (pipeline alpha; status queued)?" in result.stderr
    assert "nothing was cancelled" in result.stderr
    assert [(await client.get(i)).status for i in ids] == ["queued"] * 3
    result = await workflow_cli("cancel", "--pipeline", "alpha", url=nats_url, answer="y\n")
    assert result.returncode == 0 and result.stdout.strip() == "cancelled 3", result


async def test_delete_by_filter_hides_works_from_ls_and_count_and_show_still_says_deleted(
    client, results_service, nats_url
):
    kept, *gone = await client.deposit([Work(pipeline="alpha", tags=["old"] if i else None) for i in range(3)])
    result = await workflow_cli("delete", "-p", "alpha", "-t", "old", "--reason", "cleanup", "--yes", "--json",
                                url=nats_url)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["deleted"], answer["matched"], sorted(answer["ids"]["done"])) == (2, 2, sorted(gone))
    assert json.loads((await workflow_cli("count", "-p", "alpha", "--json", url=nats_url)).stdout) == {"count": 1}
    everything = json.loads((await workflow_cli("ls", "-p", "alpha", "--include-deleted", "--json",
                                                url=nats_url)).stdout)
    assert sorted((w["id"], w["status"]) for w in everything) == sorted(
        [(kept, "queued"), *((g, "deleted") for g in gone)])
    assert json.loads((await workflow_cli("show", gone[0], "--json", url=nats_url)).stdout)["status"] == "deleted"
    assert "Deleted" in (await workflow_cli("history", gone[0], url=nats_url)).stdout
    pipelines = json.loads((await workflow_cli("pipelines", "--json", url=nats_url)).stdout)
    assert pipelines["alpha"]["total"] == 1


async def test_requeue_by_ids_and_by_filter_report_what_they_did(client, results_service, nats_url):
    ids = await client.deposit([Work(pipeline="alpha") for _ in range(3)])
    await client.cancel(ids[0])
    await client.cancel(ids[1])
    result = await workflow_cli("requeue", ids[0], ids[1], "01NOSUCHWORK00000000000000", "--priority", "5",
                                url=nats_url)
    assert result.returncode == 0 and result.stdout.strip() == "requeued 2, not found 1", result
    result = await workflow_cli("requeue", "-p", "alpha", "-s", "cancelled", "--yes", url=nats_url)
    assert result.stdout.strip() == "no work matches; nothing changed"
    single = await workflow_cli("cancel", ids[2], url=nats_url)
    assert single.returncode == 0 and single.stdout.strip() == f"cancelled {ids[2]}"


async def test_bulk_cancel_of_a_thousand_queued_works_while_a_worker_runs_ends_each_once_and_counts_true(
    nats_url, results_service, tmp_path: Path
):
    # Given 1,000 queued works (leases long enough to ride out a loaded machine) and a worker running them
    async with workflow.connect(nats_url, lease=20) as client:
        ids = await client.deposit([Work(pipeline="bulk", parameters={"seconds": 0.02}) for _ in range(1000)])
        env = env_for(nats_url, WORKFLOW_LEASE_SECONDS="20")
        worker = workflow_process(["run", "bulk", "--function", "workflow.examples.sleep", "--concurrency", "4",
                                   "--sleep", "1"], env, tmp_path / "worker.log", tmp_path)
        try:
            await until(lambda: client.results.count(pipeline="bulk", status="success", fresh=True), 60)
            # When an operator cancels every queued work of the pipeline while it runs
            result = await workflow_cli("cancel", "--pipeline", "bulk", "--status", "queued", "--yes", "--json",
                                        url=nats_url)
            assert result.returncode == 0, result.stderr
            answer = json.loads(result.stdout)
            # ... and the worker has finished whatever it had started
            await until(lambda: _none_left(client), 30)
        finally:
            end(worker)
        # Then every work ended cancelled or succeeded, never both, and the printed count is the log's
        cancelled, succeeded = set(), set()
        for work_id in ids:
            names = [type(e).__name__ for e in await client.history(work_id)]
            assert ("Cancelled" in names) != ("Succeeded" in names), (work_id, names)
            assert names.count("Cancelled") + names.count("Succeeded") == 1, (work_id, names)
            (cancelled if "Cancelled" in names else succeeded).add(work_id)
        assert answer["cancelled"] == len(cancelled) == len(answer["ids"]["done"]) > 0
        assert set(answer["ids"]["done"]) == cancelled and succeeded
        assert answer["matched"] == answer["cancelled"] + answer["changed"] + answer["refused"]
        assert await client.results.count(pipeline="bulk", status="cancelled", fresh=True) == len(cancelled)


async def _none_left(client: workflow.Client) -> bool:
    return await client.results.count(pipeline="bulk", status=["queued", "running"], fresh=True) == 0
