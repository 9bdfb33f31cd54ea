"""workflow scale against a real single-node Slurm (the slurm_cluster fixture) and a real
nats-server: the scaler runs as its own process, its jobs run real `workflow run` workers.

Works are small and few (the machine is shared); leases are 10 s so that a loaded machine
does not lose a worker that is merely slow."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import SlurmCluster, missing, single_node_cluster

import workflow
from workflow import Work
from workflow.core import events as ev
from workflow.followers.slurm import ENDING_STATES

# The scaler's tests run against a real single-node Slurm cluster (:mod:`cluster`), one per
# test session: Debian's ``slurm-wlm`` and ``munge``, which ``make slurm`` installs as ``make
# test`` does. They skip, saying why, only where the cluster cannot exist: the packages are
# not installed (and could not be: not root, no apt-get), or the session is not root (slurmd
# must be, to start jobs as the user who submitted them). (Here, not in a conftest.py of this
# folder: a second module named ``conftest`` would shadow the suite's for ``from conftest
# import …``.)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A single-node Slurm for the whole session; SLURM_CONF set in os.environ."""
    lacking = missing()
    if lacking:
        pytest.skip(f"Slurm is not installed ({', '.join(lacking)} missing): `make slurm` installs Debian's "
                    "slurm-wlm and munge (as root)")
    if os.geteuid() != 0:
        pytest.skip("a single-node Slurm cluster needs root (slurmd starts jobs as their user)")
    with single_node_cluster(Path(tmp_path_factory.mktemp("slurm"))) as cluster:
        yield cluster


pytestmark = pytest.mark.timeout(400)

LEASE = 10.0
HERE = Path(__file__).parent


def write_config(directory: Path, owner: str, pipeline: str, *, maximum: int, lives: int, idle: float = 4,
                 worker: str = "[--isolation, thread]") -> Path:
    path = directory / "scale.yaml"
    path.write_text(f"""\
scale:
  name: {owner}
  interval: 1
  idle: {idle}
  sleep: 1
  output: {directory}/%x-%A_%a.out
  slurm: {{cpus: 1, time: "00:30:00"}}
  pipelines:
    {pipeline}: {{max: {maximum}, lives: {lives}, worker: {worker}}}
""")
    return path


@contextlib.contextmanager
def scaler(config: Path, url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`workflow scale CONFIG` as its own process; the jobs it submits inherit its environment
    (the lease, the Python path of the test functions)."""
    env = {**os.environ, "WORKFLOW_LEASE_SECONDS": str(LEASE),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "workflow.cli", "scale", str(config), "--nats", url],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Watch:
    """The jobs of one owner, looked at while waiting: the most seen at once, and every id."""

    def __init__(self, cluster, owner: str) -> None:
        self.cluster, self.owner = cluster, owner
        self.most = 0
        self.ids: set[str] = set()

    async def jobs(self) -> list[tuple[str, str]]:
        """Jobs pending or running (one being cancelled, COMPLETING, no longer counts)."""
        jobs = [job for job in await asyncio.to_thread(self.cluster.jobs, self.owner) if job[1] not in ENDING_STATES]
        self.most = max(self.most, len(jobs))
        self.ids |= {job_id for job_id, _ in jobs}
        return jobs


async def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {result!r})")
        await asyncio.sleep(0.5)


async def all_succeeded(client, ids: list[str], watch: Watch) -> bool:
    await watch.jobs()
    works = await asyncio.gather(*(client.get(work_id) for work_id in ids))
    return all(work.status == "success" for work in works)


async def attempts_of(client, work_id: str) -> tuple[int, int]:
    events = await client.history(work_id)
    return (sum(isinstance(e, ev.Started) for e in events), sum(isinstance(e, ev.Succeeded) for e in events))


async def test_queued_works_get_jobs_are_each_done_once_and_the_jobs_end_after_the_idle_time(
        slurm_cluster, nats_url, tmp_path):
    owner, pipeline = "flow", "slurm-flow"
    config = write_config(tmp_path, owner, pipeline, maximum=3, lives=12)
    watch = Watch(slurm_cluster, owner)
    async with workflow.connect(nats_url, lease=LEASE) as client:
        ids = await client.deposit([Work(pipeline=pipeline, function="workflow.examples.add",
                                         parameters={"a": i, "b": 1}) for i in range(30)])
        with scaler(config, nats_url, tmp_path / "scaler.log"):
            await until(lambda: all_succeeded(client, ids, watch), 240, "every work done")
            assert [(await client.get(i)).results["value"] for i in ids] == [i + 1 for i in range(30)]
            assert {await attempts_of(client, i) for i in ids} == {(1, 1)}  # each ran exactly once
            await until(lambda: _none(watch), 90, "the jobs cancelled after the idle time")
    log = (tmp_path / "scaler.log").read_text()
    assert "submitted" in log and "nothing waiting or running" in log, log
    assert 1 <= watch.most <= 3, f"never more jobs than the maximum: saw {watch.most}"
    outputs = list(tmp_path.glob(f"wf-{pipeline}-*.out"))
    assert outputs, "the works ran in Slurm jobs (their output files)"


async def _none(watch: Watch) -> bool:
    return not await watch.jobs()


async def test_a_job_cancelled_mid_work_has_its_attempt_recorded_lost_and_rerun(slurm_cluster, nats_url, tmp_path):
    owner, pipeline = "cancel", "slurm-cancel"
    config = write_config(tmp_path, owner, pipeline, maximum=3, lives=5,
                          worker="[--isolation, thread, --argsource, work]")
    watch = Watch(slurm_cluster, owner)
    async with workflow.connect(nats_url, lease=LEASE) as client:
        [work_id] = await client.deposit(Work(pipeline=pipeline, function="slurm_functions.slow_first_attempt",
                                              retries=2))
        with scaler(config, nats_url, tmp_path / "scaler.log"):
            async def running() -> bool:
                await watch.jobs()
                return (await client.get(work_id)).status == "running"

            await until(running, 120, "the work running in a job")
            [(job_id, state)] = await watch.jobs()
            assert state == "RUNNING"
            await asyncio.to_thread(slurm_cluster.run, "scancel", job_id)

            async def rerun() -> bool:
                await watch.jobs()
                return (await client.get(work_id)).status == "success"

            await until(rerun, 180, "the work rerun in a new job")
        failed = [e for e in await client.history(work_id) if isinstance(e, ev.Failed)]
        assert [(e.attempt, e.reason, e.will_retry) for e in failed] == [(1, "lost", True)]
        assert (await client.get(work_id)).results == {"attempt": 2}
    assert job_id not in {job for job, _ in await watch.jobs()}
    assert watch.most == 1, "one work: one job at a time, never more than the queue can use (the maximum is 3)"
    assert len(watch.ids) == 2, f"the cancelled job and the one for the rerun: {watch.ids}"


async def test_a_scaler_killed_and_restarted_mid_run_submits_no_duplicate_jobs(slurm_cluster, nats_url, tmp_path):
    owner, pipeline = "restart", "slurm-restart"
    config = write_config(tmp_path, owner, pipeline, maximum=2, lives=100, idle=3)
    watch = Watch(slurm_cluster, owner)
    async with workflow.connect(nats_url, lease=LEASE) as client:
        ids = await client.deposit([Work(pipeline=pipeline, function="workflow.examples.sleep",
                                         parameters={"seconds": 0.5}) for _ in range(24)])
        with scaler(config, nats_url, tmp_path / "first.log") as first:
            async def mid_run() -> bool:
                jobs = await watch.jobs()
                done = sum(w.status == "success" for w in await asyncio.gather(*(client.get(i) for i in ids)))
                return [state for _, state in jobs] == ["RUNNING", "RUNNING"] and 3 <= done < len(ids)

            await until(mid_run, 120, "the first scaler's two jobs running, some works done")
            first.kill()  # SIGKILL: nothing is cleaned up, nothing is remembered
            first.wait()
        submitted_before = set(watch.ids)
        with scaler(config, nats_url, tmp_path / "second.log"):
            await until(lambda: all_succeeded(client, ids, watch), 240, "every work done")
            assert {await attempts_of(client, i) for i in ids} == {(1, 1)}
            await until(lambda: _none(watch), 90, "the jobs cancelled after the idle time")
    second = (tmp_path / "second.log").read_text()
    assert "submitted" not in second, second
    assert "cancelling 2 job(s)" in second, second
    assert watch.ids == submitted_before and watch.most == 2


async def test_scale_once_submits_for_the_waiting_works_and_a_second_look_adds_nothing(
        slurm_cluster, nats_url, tmp_path):
    import json

    owner, pipeline = "once", "slurm-once"
    config = write_config(tmp_path, owner, pipeline, maximum=5, lives=1, idle=0)
    async with workflow.connect(nats_url, lease=LEASE) as client:
        await client.deposit([Work(pipeline=pipeline, function="workflow.examples.add", parameters={"a": 1, "b": 2})
                              for _ in range(2)])

    def look() -> dict:
        done = subprocess.run([sys.executable, "-m", "workflow.cli", "scale", str(config), "--once", "--json",
                               "--nats", nats_url], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        [step] = json.loads(done.stdout)
        return step

    first = await asyncio.to_thread(look)
    assert (first["pipeline"], first["waiting"], first["jobs"], first["submitted"]) == (pipeline, 2, 0, 2)
    second = await asyncio.to_thread(look)
    assert second["jobs"] + second["submitted"] <= 2 and second["submitted"] == 0
    watch = Watch(slurm_cluster, owner)
    await until(lambda: _none(watch), 120, "both one-life jobs ended")
