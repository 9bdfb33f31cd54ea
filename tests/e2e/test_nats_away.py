"""NATS away for longer than a lease while works run, the projector up (issue 9).

A standalone nats-server (its store in a temp dir) holds the log; ``workflow server --nats``
runs the projector, the results service and the resolver against it, and two ``workflow
run`` processes run slow works under a short lease. While the works run, the nats-server
is taken away for three leases, in two ways:

* **killed** (SIGKILL) and started again on the same port and store: every connection
  drops at once, so the clients see it and reconnect;
* **frozen** (SIGSTOP, then SIGCONT): the connections stay open but nothing answers, and
  when it resumes its clock has jumped past every lease (the honest picture of a server
  paused by a VM migration, a stalled disk, or a partition that heals without resets).

Neither the workers nor the server process are restarted. What must hold afterwards: every
work succeeded exactly once in the log (none lost, none recorded twice), the worker and
server processes are the same ones (they reconnected by themselves), the results service
answers each work as the fold of its events, ``workflow audit`` is clean, and the read
model the projector wrote is the one a fresh replay of the log builds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from deployed import assert_each_succeeded_once_and_read_model_equals_fold, end, env_for, until, workflow_process

import workflow
from workflow import Work
from workflow.core import events as ev
from workflow.core.errors import WorkflowError
from workflow.core.status import FINISHED
from workflow.log import jsapi
from workflow.results.projector import replay
from workflow.server import EmbeddedNats, prepare_log

pytestmark = pytest.mark.timeout(150)

LEASE = 2.0
AWAY = 3 * LEASE  # how long NATS is gone: the outage itself, not a wait for a condition
SHORT, LONG = 1.0, AWAY + 4  # short works end while NATS is away; long ones still run when it is back
WORKERS, CONCURRENCY = 2, 3
PIPELINE = "away"


class Outage:
    """How NATS goes away and comes back: ``leave`` then ``come_back`` the same server."""

    def __init__(self, nats: EmbeddedNats, kind: str) -> None:
        self.nats, self.kind = nats, kind

    def leave(self) -> None:
        assert self.nats.process is not None
        if self.kind == "killed":
            self.nats.kill()
        else:
            os.kill(self.nats.process.pid, signal.SIGSTOP)

    def come_back(self) -> None:
        assert self.nats.process is not None
        if self.kind == "killed":  # the same port and the same store
            self.nats = EmbeddedNats(self.nats.data_dir, port=self.nats.port or -1).start()
        else:
            os.kill(self.nats.process.pid, signal.SIGCONT)


def pids_in(marker: Path) -> list[int]:
    return [int(line) for line in marker.read_text().split()] if marker.exists() else []


def table(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def text_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def attempts_and_outcomes(history: list[ev.AnyEvent]) -> tuple[list[int], list[int]]:
    """The attempt numbers started, and those of the outcomes recorded, in log order."""
    started = [event.attempt for event in history if isinstance(event, ev.Started)]
    ended = [event.attempt for event in history if isinstance(event, ev.Succeeded | ev.Failed)]
    return started, ended


async def projected_up_to(client: workflow.Client, seq: int) -> bool:
    try:
        return await client.results.position() >= seq
    except WorkflowError:  # the results service is not answering yet
        return False


async def all_finished(client: workflow.Client, ids: list[str]) -> bool:
    return all([(await client.get(work_id)).status in FINISHED for work_id in ids])


@pytest.fixture
def processes():
    """Every subprocess a test starts, ended (SIGTERM, then SIGKILL) at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        end(process)


@pytest.fixture
def standalone_nats(tmp_path: Path):
    """A nats-server on its own, so it can be taken away while the rest stays up."""
    holder: list[Outage] = []

    def start(kind: str) -> Outage:
        holder.append(Outage(EmbeddedNats(tmp_path / "nats", port=-1).start(), kind))
        return holder[0]

    yield start
    for outage in holder:
        if outage.nats.process is not None and outage.nats.process.poll() is None:
            os.kill(outage.nats.process.pid, signal.SIGCONT)
            outage.nats.stop()


async def start_server(tmp_path: Path, url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``workflow server --nats URL``: the projector, the results service and the resolver."""
    server_log = tmp_path / "server.log"
    server = workflow_process(["server", "--nats", url, "--data-dir", str(tmp_path / "server")], env, server_log,
                              tmp_path)
    await until(lambda: "workflow server ready" in text_of(server_log) or server.poll() is not None, timeout=40)
    assert server.poll() is None, text_of(server_log)[-3000:]
    return server


def works_to_run(marker: Path) -> list[Work]:
    """Six slow works that fill every slot (short ones end while NATS is away, long ones
    still run when it is back), then four quick ones that wait in the bucket meanwhile."""
    slow = [Work(pipeline=PIPELINE, function="worker_functions.slow",
                 parameters={"seconds": seconds, "marker": str(marker)})
            for seconds in [SHORT] * 3 + [LONG] * 3]
    quick = [Work(pipeline=PIPELINE, function="worker_functions.slow", parameters={"seconds": 0.1})
             for _ in range(4)]
    return slow + quick


async def assert_each_attempt_and_work_recorded_once(client: workflow.Client, ids: list[str]) -> int:
    """One ``Succeeded`` per work, the results service's answer equal to the fold, every
    attempt ended by exactly one outcome, and every attempt run again explained by a
    recorded loss. Returns how many attempts were run again."""
    restarted = await assert_each_succeeded_once_and_read_model_equals_fold(client, ids)
    histories = {work_id: await client.history(work_id) for work_id in ids}
    for work_id, history in histories.items():
        started, ended = attempts_and_outcomes(history)
        assert started == ended == list(range(1, len(started) + 1)), (work_id, history)
    lost = [event for history in histories.values() for event in history
            if isinstance(event, ev.Failed) and event.reason == "lost"]
    assert len(lost) == restarted, "an attempt was started again without the loss of the previous one recorded"
    return restarted


async def assert_read_model_is_a_fresh_replay(url: str, live: Path, fresh: Path) -> None:
    async with workflow.connect(url) as client:
        await replay(client.nc, fresh)
    for sql in ("SELECT * FROM works ORDER BY id", "SELECT * FROM events ORDER BY seq"):
        assert table(live, sql) == table(fresh, sql), sql


async def run_through_an_outage(tmp_path: Path, outage: Outage, processes: list[subprocess.Popen[bytes]]) -> None:
    url = outage.nats.url
    await prepare_log(url)
    env = env_for(url, WORKFLOW_LEASE_SECONDS=str(LEASE), WORKFLOW_RETRY_BACKOFF="0.2")

    # Given the projector and the results service up, and slow works running under short leases
    server = await start_server(tmp_path, url, env)
    processes.append(server)
    marker = tmp_path / "running"
    async with workflow.connect(url, lease=LEASE) as client:
        ids = await client.deposit(works_to_run(marker))
    workers = [
        workflow_process(["run", PIPELINE, "--sleep", "1", "--concurrency", str(CONCURRENCY)], env,
                         tmp_path / f"worker-{n}.log", tmp_path)
        for n in range(WORKERS)
    ]
    processes.extend(workers)
    await until(lambda: len(pids_in(marker)) >= WORKERS * CONCURRENCY, timeout=40)

    # When NATS goes away for three leases while they run, and comes back on the same port and store
    outage.leave()
    print(f"NATS {outage.kind} with {len(pids_in(marker))} works running; away for {AWAY:.0f} s")
    await asyncio.sleep(AWAY)
    outage.come_back()
    back = time.monotonic()

    # Then the same processes finish every work, and the projector catches up by itself
    async with workflow.connect(url) as client:
        await until(lambda: all_finished(client, ids), timeout=60)
        last = await jsapi.last_sequence(client.nc)
        await until(lambda: projected_up_to(client, last), timeout=40)
        print(f"every work finished and projected {time.monotonic() - back:.1f} s after NATS came back")
        restarted = await assert_each_attempt_and_work_recorded_once(client, ids)
    print(f"{len(ids)} works succeeded once each; {restarted} attempts of live workers recorded lost and run again")
    for process in (server, *workers):
        assert process.poll() is None, f"{process.args} exited ({process.returncode}): it did not ride out the outage"

    # And the audit is clean, and the read model is the one a fresh replay of the log builds
    audit = subprocess.run([sys.executable, "-m", "workflow.cli", "audit", "--nats", url], capture_output=True,
                           text=True, env=env, timeout=60)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    for worker in workers:
        end(worker)
    end(server)
    assert server.returncode == 0, text_of(tmp_path / "server.log")[-3000:]
    await assert_read_model_is_a_fresh_replay(url, tmp_path / "server" / "workflow.duckdb", tmp_path / "fresh.duckdb")


async def test_workers_and_projector_ride_out_a_killed_nats_away_longer_than_a_lease_and_record_each_work_once(
    tmp_path, standalone_nats, processes
):
    await run_through_an_outage(tmp_path, standalone_nats("killed"), processes)
    # the restarted server lost the projector's ordered consumer: it started afresh on
    # reconnecting, rather than after two missed idle heartbeats
    assert "reconnected to NATS; resuming the log after sequence" in text_of(tmp_path / "server.log")


async def test_workers_and_projector_ride_out_a_frozen_nats_away_longer_than_a_lease_and_record_each_work_once(
    tmp_path, standalone_nats, processes
):
    await run_through_an_outage(tmp_path, standalone_nats("frozen"), processes)
