"""``workflow run --tag`` as real processes, beside an unfiltered ``workflow run`` on the same
pipeline, against a real nats-server and results service: each takes what it should, the
rest stays queued in order, every work finishes exactly once, and a SIGKILLed filtered
worker's work is recorded lost and run again: through the bucket (its watchdog), or, with
only filtered workers, by `workflow server`'s claim sweeper."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deployed import end, log_tails, until, workflow_process

import workflow
from workflow import Work
from workflow.core import events as ev

HERE = Path(__file__).parent
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def start_worker(nats_url: str, tmp_path: Path):
    """Start ``workflow run PIPELINE --sleep 1 ARGS…`` with a lease of ``lease`` seconds
    (killed at the end of the test)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, lease: float, pipeline: str = "mixed") -> subprocess.Popen[bytes]:
        env = dict(os.environ, WORKFLOW_NATS_URL=nats_url, WORKFLOW_LEASE_SECONDS=str(lease),
                   WORKFLOW_RETRY_BACKOFF="0.1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        with open(tmp_path / f"worker-{len(processes)}.log", "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "workflow.cli", "run", pipeline, "--sleep", "1", *args],
                                       env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def names(events: list[ev.AnyEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


def all_succeeded(client, ids):
    async def check() -> bool:
        return all([(await client.get(work_id)).status == "success" for work_id in ids])
    return check


async def test_a_filtered_and_an_unfiltered_worker_on_one_pipeline_each_take_theirs_and_every_work_finishes_once(
    nats_url, results_service, start_worker
):
    lease = 5.0  # long enough that a stall on a loaded machine never looks like a death
    async with workflow.connect(nats_url, lease=lease) as client:
        # Given a filtered worker, and tagged works interleaved with plain ones in one pipeline
        start_worker("--tag", "calib", "--tag", "beam", "-f", "workflow.examples.add", lease=lease)
        works = [Work(pipeline="mixed", parameters={"a": i, "b": 1}, tags=[("calib", "beam", "x")[i % 3]])
                 for i in range(18)]
        ids = await client.deposit(works)
        tagged = [w.id for w in works if set(w.tags or ()) & {"calib", "beam"}]
        plain = [w.id for w in works if w.id not in tagged]
        # When it runs alone, it takes every matching work and only those
        await until(all_succeeded(client, tagged), timeout=60)
        for work_id in plain:
            assert names(await client.history(work_id)) == ["Deposited"]  # untouched, still queued
        # And an unfiltered worker then takes the rest, in order, meeting the finished
        # works' queue messages only to discard them
        start_worker("-f", "workflow.examples.add", lease=lease)
        await until(all_succeeded(client, plain), timeout=60)
        starts: dict[str, list[ev.Started]] = {}
        for work_id in ids:
            history = await client.history(work_id)
            assert names(history) == ["Deposited", "Started", "Succeeded"], (work_id, names(history))
            starts[work_id] = [e for e in history if isinstance(e, ev.Started)]
        assert all(starts[w][0].via == "filter" for w in tagged)
        assert all(starts[w][0].via == "bucket" for w in plain)
        plain_order = sorted(plain, key=lambda w: starts[w][0].time)
        assert plain_order == plain  # oldest first, as deposited
        # And no queue message is left behind in the bucket, undelivered or held
        async def bucket_empty() -> bool:
            return all(b.undelivered == 0 and b.held == 0 for b in await client.buckets() if b.pipeline == "mixed")
        await until(bucket_empty, timeout=30)


async def test_a_sigkilled_filtered_worker_s_work_is_recorded_lost_and_run_again_by_an_unfiltered_worker(
    nats_url, results_service, start_worker, tmp_path
):
    lease = 2.0
    marker = tmp_path / "pids"
    async with workflow.connect(nats_url, lease=lease) as client:
        [work_id] = await client.deposit(Work(
            pipeline="mixed", tags=["calib"], timeout=5, function="worker_functions.slow",
            parameters={"seconds": 1, "marker": str(marker)},
        ))
        filtered = start_worker("--tag", "calib", lease=lease)
        await until(lambda: marker.exists() and marker.read_text().strip(), timeout=60)
        filtered.kill()  # SIGKILL mid-work: its heartbeat key expires within a lease
        await asyncio.to_thread(filtered.wait, 30)
        start_worker(lease=lease)
        await until(all_succeeded(client, [work_id]), timeout=60)
        history = await client.history(work_id)
        assert names(history) == ["Deposited", "Started", "Failed", "Started", "Succeeded"]
        claimed, lost, rerun = history[1], history[2], history[3]
        assert claimed.via == "filter" and rerun.via == "bucket"
        assert lost.reason == "lost" and lost.will_retry and lost.attempt == 1 and rerun.attempt == 2


async def test_with_only_filtered_workers_a_sigkilled_one_s_work_is_recorded_lost_by_the_server_and_run_again(
    nats_url, start_worker, tmp_path
):
    lease = 3.0  # a dead claim is noticed within a lease and a third; a live one beats every second
    env = dict(os.environ, WORKFLOW_NATS_URL=nats_url, WORKFLOW_LEASE_SECONDS=str(lease))
    server_log = tmp_path / "server.log"
    server = workflow_process(["server", "--nats", nats_url, "--data-dir", str(tmp_path / "server")], env,
                              server_log, tmp_path)
    marker = tmp_path / "pids"
    try:
        await until(lambda: "claim sweeper following the log" in server_log.read_text(), timeout=60,
                    explain=lambda: log_tails([server_log]))
        async with workflow.connect(nats_url, lease=lease) as client:
            [work_id] = await client.deposit(Work(
                pipeline="mixed", tags=["calib"], function="worker_functions.slow",
                parameters={"seconds": 2, "marker": str(marker)},
            ))
            filtered = start_worker("--tag", "calib", lease=lease)
            await until(lambda: marker.exists() and marker.read_text().strip(), timeout=60)
            filtered.kill()  # SIGKILL mid-work: its heartbeat key expires within a lease
            await asyncio.to_thread(filtered.wait, 30)
            start_worker("--tag", "calib", lease=lease)  # filtered only: no bucket worker meets the message
            await until(all_succeeded(client, [work_id]), timeout=90, explain=lambda: log_tails([server_log]))
            history = await client.history(work_id)
            assert names(history) == ["Deposited", "Started", "Failed", "Started", "Succeeded"]
            claimed, lost, rerun = history[1], history[2], history[3]
            assert claimed.via == "filter" and rerun.via == "filter"
            assert lost.reason == "lost" and lost.will_retry and lost.attempt == 1 and rerun.attempt == 2
            assert lost.by == "workflow-sweeper"  # the server recorded it, not a worker
    finally:
        end(server)
