"""Benchmark: ``workflow scale`` on a local single-node Slurm, from a deposit to an empty queue.

A fresh nats-server and a fresh single-node Slurm (tests/slurm/cluster.py: Debian's
slurm-wlm and munge, run as root) are started; ``workflow scale`` runs as its own process
(``interval: 1``), idle, with no job. The clock starts before a deposit of N works of
``workflow.examples.add`` (one call); we note when the deposit returned, when the first
owned job is RUNNING in ``squeue``, and when the pipeline's buckets hold nothing waiting or
held (every work recorded), then that every work succeeded.

The workers run with ``--isolation thread --concurrency 4`` and as many lives as works: a
job's cost is starting Python and connecting (about a second on an idle machine), paid
once per job.

Usage (as root): ``python benchmarks/slurm_scale.py [--works 1000] [--max-jobs 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "slurm"))

from cluster import missing, single_node_cluster  # noqa: E402

import workflow  # noqa: E402
from workflow import Work  # noqa: E402
from workflow.followers.slurm import ENDING_STATES  # noqa: E402
from workflow.server import EmbeddedNats, prepare_log  # noqa: E402

PIPELINE = "bench-scale"


async def measure(works: int, max_jobs: int, directory: Path) -> dict[str, float | int]:
    config = directory / "scale.yaml"
    config.write_text(f"""\
scale:
  name: bench
  interval: 1
  idle: 30
  sleep: 1
  output: {directory}/%x-%A_%a.out
  pipelines:
    {PIPELINE}: {{max: {max_jobs}, lives: {works}, concurrency: 4, worker: [--isolation, thread]}}
""")
    with EmbeddedNats(directory / "nats", port=-1) as nats, single_node_cluster(directory / "slurm") as cluster:
        await prepare_log(nats.url)
        env = {**os.environ, "WORKFLOW_LEASE_SECONDS": "30"}
        with (directory / "scaler.log").open("wb") as log:
            scaler = subprocess.Popen([sys.executable, "-m", "workflow.cli", "scale", str(config), "--nats", nats.url],
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            async with workflow.connect(nats.url, lease=30) as client:
                await asyncio.sleep(3)  # the scaler is up and idle: a steady state, not its start
                began = time.monotonic()
                ids = await client.deposit([Work(pipeline=PIPELINE, function="workflow.examples.add",
                                                 parameters={"a": i, "b": 1}) for i in range(works)])
                deposited = time.monotonic() - began
                first_running = None
                most_jobs = 0
                while True:
                    jobs = [job for job in await asyncio.to_thread(cluster.jobs, "bench")
                            if job[1] not in ENDING_STATES]
                    most_jobs = max(most_jobs, len(jobs))
                    if first_running is None and any(state == "RUNNING" for _, state in jobs):
                        first_running = time.monotonic() - began
                    depth = [b for b in await client.buckets() if b.pipeline == PIPELINE]
                    if depth and sum(b.waiting + b.held for b in depth) == 0:
                        empty = time.monotonic() - began
                        break
                    if time.monotonic() - began > 1800:
                        raise SystemExit("the queue did not empty within 30 minutes")
                    await asyncio.sleep(0.25)
                statuses = [(await client.get(work_id)).status for work_id in ids[:: max(1, works // 50)]]
                assert set(statuses) == {"success"}, statuses
        finally:
            scaler.send_signal(signal.SIGTERM)
            scaler.wait(30)
    running_for = empty - (first_running or 0)
    return {"works": works, "max_jobs": max_jobs, "deposit_s": round(deposited, 2),
            "first_job_running_s": round(first_running or float("nan"), 2), "queue_empty_s": round(empty, 2),
            "most_jobs_at_once": most_jobs, "works_per_s_after_first_job": round(works / running_for, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works", type=int, default=1000)
    parser.add_argument("--max-jobs", type=int, default=4)
    args = parser.parse_args()
    if missing() or os.geteuid() != 0:
        raise SystemExit("needs Slurm (make slurm) and root")
    with tempfile.TemporaryDirectory(prefix="slurm-scale-") as directory:
        print(json.dumps(asyncio.run(measure(args.works, args.max_jobs, Path(directory)))))


if __name__ == "__main__":
    main()
