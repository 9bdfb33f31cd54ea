"""A signal to the worker's whole process group is a signal to the worker alone.

Supervisors (systemd's default KillMode, a shell's Ctrl-C, ``kill -TERM -<pgid>``) signal
every process of a group. ``workflow run`` starts helpers in its group (the forkserver,
multiprocessing's resource tracker); its pool children live in their own sessions. Each
test starts the worker as a session leader (``start_new_session``), so ``os.killpg`` on
its pid reaches exactly the worker and its helpers, as a supervisor's signal would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from deployed import until

import workflow
from workflow import Work
from workflow.core import events as ev

HERE = Path(__file__).parent
pytestmark = pytest.mark.timeout(90)

#: Long enough that a held delivery (given back after min(1 s, lease / 4)) and a running
#: work outlive the moments a test needs; short enough for crash redelivery not to matter.
LEASE = "5"


def worker_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "WORKFLOW_NATS_URL": url,
        "WORKFLOW_LEASE_SECONDS": LEASE,
        "WORKFLOW_RETRY_BACKOFF": "0.1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }


@pytest.fixture
async def client(nats_url: str):
    async with workflow.connect(nats_url, lease=float(LEASE)) as c:
        yield c


@pytest.fixture
def start_worker(nats_url: str, tmp_path: Path):
    """Start ``workflow run e2e ARGS…`` as a session (and process group) leader."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"worker-{len(processes)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "workflow.cli", "run", "e2e", "--sleep", "1", *args],
                env=worker_env(nats_url), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                start_new_session=True,
            )
        process.log_path = log_path  # type: ignore[attr-defined]
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()




async def exit_code(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    return await asyncio.to_thread(process.wait, timeout)


def pids_in(marker: Path) -> list[int]:
    return [int(line) for line in marker.read_text().split()] if marker.exists() else []


def names(events: list[ev.AnyEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError, IndexError):
            continue
    return found


def held(client: workflow.Client, priority: int, count: int):
    """A check: the bucket of ``priority`` holds ``count`` deliveries (taken, not acked)."""
    async def check():
        buckets = await client.buckets()
        return any(b.pipeline == "e2e" and b.priority == priority and b.held == count for b in buckets)
    return check


async def test_a_group_sigterm_lets_the_running_work_finish_as_a_success_and_the_worker_exit_zero(
    client, start_worker, tmp_path
):
    marker = tmp_path / "pids"
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.slow",
                                          parameters={"seconds": 2, "marker": str(marker)}))
    worker = start_worker("--concurrency", "2")  # a second, idle warm child gets the signal's chance too
    await until(lambda: pids_in(marker))
    helpers = children_of(worker.pid)
    assert any("forkserver" in command for _, command in helpers), helpers
    os.killpg(worker.pid, signal.SIGTERM)
    assert await exit_code(worker) == 0, worker.log_path.read_text()[-3000:]
    events = await client.history(work_id)
    assert names(events) == ["Deposited", "Started", "Succeeded"]  # no Failed: no pool child or forkserver died
    assert events[-1].attempt == 1 and events[-1].results["slept"] == 2
    log = worker.log_path.read_text()
    assert "Traceback" not in log and "outcome=success" in log


async def test_works_fetched_but_not_started_when_the_group_sigterm_arrives_are_given_back_without_spending_a_retry(
    client, start_worker, tmp_path
):
    marker, gate = tmp_path / "pids", tmp_path / "release"
    # A quick work first: after it the worker fetches ahead, so the two waiting works are
    # held by it (fetched, never started) while the slow one runs (until the gate opens).
    quick, slow, *waiting = await client.deposit([
        Work(pipeline="e2e", function="os.getpid", priority=5),
        Work(pipeline="e2e", function="worker_functions.until_released",
             parameters={"gate": str(gate), "marker": str(marker)}, priority=3),
        Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 0.1}, priority=1, retries=0),
        Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 0.1}, priority=1, retries=0),
    ])
    worker = start_worker()
    await until(lambda: pids_in(marker))
    await until(held(client, priority=1, count=2), timeout=20)
    os.killpg(worker.pid, signal.SIGTERM)
    await until(lambda: "taking no more" in worker.log_path.read_text())  # heard, while the slow one runs
    gate.touch()
    assert await exit_code(worker) == 0, worker.log_path.read_text()[-3000:]
    assert names(await client.history(slow)) == ["Deposited", "Started", "Succeeded"]
    for work_id in waiting:
        assert names(await client.history(work_id)) == ["Deposited"]  # nothing recorded, no attempt used
        assert (await client.get(work_id)).status == "queued"
    # retries=0: had an attempt been spent, the next start would fail them for good
    second = start_worker("--lives", "2")
    assert await exit_code(second) == 0, second.log_path.read_text()[-3000:]
    for work_id in waiting:
        events = await client.history(work_id)
        assert names(events) == ["Deposited", "Started", "Succeeded"] and events[1].attempt == 1
    assert (await client.get(quick)).status == "success"


async def test_a_group_sigterm_while_the_forkserver_is_still_starting_stops_the_worker_cleanly(
    client, start_worker, tmp_path
):
    # The forkserver imports workflow's runner before it can ignore SIGTERM: a group signal
    # in that moment used to kill it, and the worker then died with "Aborted!" (exit 1).
    ids = await client.deposit([Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 0.1})
                                for _ in range(2)])
    worker = start_worker()

    def forkserver_started() -> bool:
        return any("forkserver" in command for _, command in children_of(worker.pid))

    await until(forkserver_started, interval=0.005)
    os.killpg(worker.pid, signal.SIGTERM)
    assert await exit_code(worker) == 0, worker.log_path.read_text()[-3000:]
    for work_id in ids:
        assert names(await client.history(work_id)) == ["Deposited"]
