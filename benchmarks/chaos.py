"""Chaos, with figures: works flow while workers and the server are SIGKILLed.

A real ``workflow server`` (its own process group: the embedded nats-server and the
projector) and ``--workers`` real ``workflow run`` processes run ``--works`` works of
:func:`add` (the seed's ``add``, which also appends its work id to an *execution file*
before it returns, so every execution is counted, recorded or not). While the works flow:

* workers are SIGKILLed at random moments (``--worker-kills`` of them, a random victim
  each time, at random points of the run) and started again;
* the whole server (``workflow server`` and its nats-server, one process group) is
  SIGKILLed once (``--server-kills``) and started again on the same port and data directory.

Deposits go on through the server's death (a deposit is retried with the same ids: the
log refuses a second work for an id). At the end, when every work is finished, it asks
``workflow audit --json`` and prints, from the log itself (every work's events):

* deposited, succeeded, failed for good, retried (works with more than one attempt);
* lost attempts recorded (``Failed(reason="lost")``: what the kills cost);
* works lost: deposited, but not finished (or with no history): must be 0;
* successes recorded twice (two ``Succeeded`` in one work's log): must be 0;
* functions executed more than once (from the execution file): the honest
  at-least-once figure (a worker killed after its function returned but before its
  ``Succeeded`` landed runs it again; the log still records one success).

Usage: ``python benchmarks/chaos.py [--works 2000] [--workers 3] [--worker-kills 6]
[--server-kills 1] [--lease 4] [--seed S] [--dir DIR]``; exit 1 if a promise is broken.
``tests/e2e/test_chaos.py`` runs a small version of it (imports this module).

The module imports nothing heavy at the top: the workers' children import it for
:func:`add`.
"""

from __future__ import annotations

import os
import time


def add(a: int, b: int, work_id: str, executions: str, seconds: float = 0.0) -> int:
    """The seed's ``add``; first appends ``work_id`` to ``executions`` (one line, one write)."""
    fd = os.open(executions, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{work_id}\n".encode())
    finally:
        os.close(fd)
    if seconds:
        time.sleep(seconds)
    return a + b


# -- the harness (not imported by the workers' children) ---------------------------------

import argparse  # noqa: E402
import asyncio  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
PIPELINE = "chaos"
FINAL = ("success", "failure", "cancelled")


@dataclass
class Figures:
    """What a chaos run counted; ``broken`` lists the promises it saw broken."""

    deposited: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    lost_attempts: int = 0
    works_lost: int = 0
    successes_twice: int = 0
    executions: int = 0
    executed_more_than_once: int = 0
    worker_kills: int = 0
    worker_exits: int = 0
    server_kills: int = 0
    audit_exit_code: int | None = None
    audit: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def broken(self) -> list[str]:
        found = []
        if self.works_lost:
            found.append(f"{self.works_lost} works lost")
        if self.successes_twice:
            found.append(f"{self.successes_twice} successes recorded twice")
        if self.audit_exit_code != 0 or self.audit.get("total"):
            found.append(f"audit not clean (exit {self.audit_exit_code}): {self.audit.get('anomalies')}")
        return found

    def table(self) -> str:
        rows = [
            ("works deposited", self.deposited),
            ("succeeded", self.succeeded),
            ("failed for good", self.failed),
            ("retried (more than one attempt)", self.retried),
            ("lost attempts recorded (Failed reason=lost)", self.lost_attempts),
            ("works lost (must be 0)", self.works_lost),
            ("successes recorded twice (must be 0)", self.successes_twice),
            ("function executions", self.executions),
            ("functions executed more than once (at-least-once)", self.executed_more_than_once),
            ("workers SIGKILLed / exited on their own (e.g. started while the server was down)",
             f"{self.worker_kills} / {self.worker_exits}"),
            ("server SIGKILLed", self.server_kills),
            ("audit", "clean" if self.audit_exit_code == 0 and not self.audit.get("total")
             else f"{self.audit.get('total')} anomalies (exit {self.audit_exit_code})"),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(url: str, lease: float) -> dict[str, str]:
    return {
        **os.environ,
        "WORKFLOW_NATS_URL": url,
        "WORKFLOW_LEASE_SECONDS": str(lease),
        "WORKFLOW_RETRY_BACKOFF": "0.2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }


class Processes:
    """The server and the workers of one run, each its own process group."""

    def __init__(self, workdir: Path, port: int, lease: float, workers: int, concurrency: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"nats://127.0.0.1:{port}"
        self.env = environment(self.url, lease)
        self.server: subprocess.Popen[str] | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.concurrency = concurrency
        self.starts = 0

    async def start_server(self, timeout: float = 60) -> None:
        command = [sys.executable, "-m", "workflow.cli", "server", "--port", str(self.port),
                   "--data-dir", str(self.workdir / "data"), "--log-level", "warning"]
        with open(self.workdir / "server.log", "ab") as log:
            self.server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=self.env,
                                           start_new_session=True)
        assert self.server.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.server.stdout.readline), timeout)
        if not re.search(r"workflow server ready on nats://", line):
            raise RuntimeError(f"the server said {line!r}; see {self.workdir / 'server.log'}")

    def kill_server(self) -> None:
        """SIGKILL ``workflow server`` and its nats-server at once (their process group)."""
        assert self.server is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()

    def start_worker(self, slot: int) -> None:
        self.starts += 1
        command = [sys.executable, "-m", "workflow.cli", "run", PIPELINE, "--function", "chaos.add",
                   "--sleep", "1", "--concurrency", str(self.concurrency)]
        with open(self.workdir / f"worker-{slot}.log", "ab") as log:
            self.workers[slot] = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                  cwd=self.workdir, start_new_session=True)

    def kill_worker(self, slot: int) -> None:
        """SIGKILL the worker's own process only: its forkserver and children must follow."""
        worker = self.workers[slot]
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()

    def exited_workers(self) -> list[int]:
        return [slot for slot, worker in enumerate(self.workers) if worker is not None and worker.poll() is not None]

    async def stop_workers(self, timeout: float = 60) -> None:
        for worker in self.workers:
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            if worker is not None:
                try:
                    await asyncio.to_thread(worker.wait, timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()

    def kill_all(self) -> None:
        for process in [self.server, *self.workers]:
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def executed(path: Path) -> collections.Counter[str]:
    """How many times each work's function ran (lines of the execution file)."""
    return collections.Counter(path.read_text().split()) if path.exists() else collections.Counter()


async def deposit_all(client: Any, works: list[Any], chunk: int, deadline: float) -> None:
    """Deposit in chunks, retrying a chunk (same ids) through the server's death."""
    for start in range(0, len(works), chunk):
        batch = works[start : start + chunk]
        while True:
            try:
                await client.deposit(batch)
                break
            except Exception as error:  # the server is away: the same ids again are safe
                if time.monotonic() > deadline:
                    raise
                print(f"  deposit retried ({type(error).__name__}: {error})", file=sys.stderr)
                await asyncio.sleep(0.5)
        await asyncio.sleep(0)


async def chaos(processes: Processes, figures: Figures, progress_of: Any, *, works: int, worker_kills: int,
                server_kills: int, rng: random.Random, deadline: float) -> None:
    """Kill at random points of the run (fractions of the works executed), restart."""
    plan = sorted([(rng.uniform(0.05, 0.85), "worker") for _ in range(worker_kills)]
                  + [(rng.uniform(0.3, 0.6), "server") for _ in range(server_kills)])
    for at, what in plan:
        while progress_of() < at * works:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the works stopped flowing at {progress_of()} of {works}")
            for slot in processes.exited_workers():  # one that died by itself comes back too
                figures.worker_exits += 1
                processes.start_worker(slot)
            await asyncio.sleep(0.05)
        if what == "server":
            processes.kill_server()
            figures.server_kills += 1
            print(f"  server SIGKILLed at {progress_of()} executions", file=sys.stderr)
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await processes.start_server()
        else:
            slot = rng.randrange(len(processes.workers))
            processes.kill_worker(slot)
            figures.worker_kills += 1
            print(f"  worker {slot} SIGKILLed at {progress_of()} executions", file=sys.stderr)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            processes.start_worker(slot)


async def finished(client: Any, works: int) -> bool:
    try:
        counts = (await client.results.pipelines(fresh=True)).get(PIPELINE, {})
    except Exception:
        return False
    return sum(counts.get(status, 0) for status in FINAL) >= works


async def count_from_the_log(client: Any, ids: list[str], figures: Figures) -> None:
    """Every work's events, read from the log: the figures that must hold."""
    from workflow.core import events as ev
    from workflow.core.fold import fold

    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        histories = await asyncio.gather(*(client.history_records(work_id) for work_id in chunk))
        for records in histories:
            events = [record.event for record in records]
            figures.deposited += sum(isinstance(e, ev.Deposited) for e in events)
            state = fold(events, skip_refused=True) if events else None
            if state is None or state.status not in FINAL:
                figures.works_lost += 1
                continue
            successes = sum(isinstance(e, ev.Succeeded) for e in events)
            figures.successes_twice += successes > 1
            figures.succeeded += state.status == "success"
            figures.failed += state.status == "failure"
            figures.retried += sum(isinstance(e, ev.Started) for e in events) > 1
            figures.lost_attempts += sum(isinstance(e, ev.Failed) and e.reason == "lost" for e in events)


async def audit(url: str, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "workflow.cli", "audit", "--json", "--nats", url],
        env=env, capture_output=True, text=True, timeout=120,
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        return done.returncode, {"total": None, "anomalies": done.stdout[-2000:] + done.stderr[-2000:]}


async def run(
    *, works: int = 2000, workers: int = 3, worker_kills: int = 6, server_kills: int = 1, lease: float = 4.0,
    concurrency: int = 2, seconds: float = 0.05, seed: int | None = None, workdir: Path | None = None,
    timeout: float = 900.0,
) -> Figures:
    """One chaos run (see the module docstring); its figures."""
    import workflow
    from workflow import Work
    from workflow.core.ids import new_id

    rng = random.Random(seed)
    figures = Figures()
    began = time.monotonic()
    deadline = began + timeout
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="workflow-chaos-")))
        workdir.mkdir(parents=True, exist_ok=True)
        execution_file = workdir / "executions"
        processes = Processes(workdir, free_port(), lease, workers, concurrency)
        try:
            await processes.start_server()
            for slot in range(workers):
                processes.start_worker(slot)
            ids = [new_id() for _ in range(works)]
            batch = [
                Work(id=work_id, pipeline=PIPELINE, parameters={
                    "a": i, "b": 1, "work_id": work_id, "executions": str(execution_file), "seconds": seconds,
                })
                for i, work_id in enumerate(ids)
            ]
            async with workflow.connect(processes.url, lease=lease) as client:
                depositing = asyncio.create_task(deposit_all(client, batch, 100, deadline))
                await chaos(processes, figures, lambda: len(executed(execution_file)), works=works,
                            worker_kills=worker_kills, server_kills=server_kills, rng=rng, deadline=deadline)
                await depositing
                while not await finished(client, works):
                    if time.monotonic() > deadline:
                        raise TimeoutError("not every work finished in time")
                    for slot in processes.exited_workers():
                        figures.worker_exits += 1
                        processes.start_worker(slot)
                    await asyncio.sleep(0.25)
                figures.seconds = time.monotonic() - began
                await processes.stop_workers()
                figures.audit_exit_code, figures.audit = await audit(processes.url, processes.env)
                await count_from_the_log(client, ids, figures)
            counts = executed(execution_file)
            figures.executions = sum(counts.values())
            figures.executed_more_than_once = sum(1 for n in counts.values() if n > 1)
            processes.stop_server()
        finally:
            processes.kill_all()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--works", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--worker-kills", type=int, default=6)
    parser.add_argument("--server-kills", type=int, default=1)
    parser.add_argument("--lease", type=float, default=4.0, help="WORKFLOW_LEASE_SECONDS (AckWait) of the buckets")
    parser.add_argument("--concurrency", type=int, default=2, help="each worker's --concurrency")
    parser.add_argument("--seconds", type=float, default=0.05,
                        help="how long each work sleeps (so kills land mid-work)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="keep the logs, the data and the execution file here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"chaos: {args.works} works, {args.workers} workers, {args.worker_kills} worker kills, "
          f"{args.server_kills} server kills, lease {args.lease:g} s, seed {seed}", file=sys.stderr)
    figures = asyncio.run(run(
        works=args.works, workers=args.workers, worker_kills=args.worker_kills, server_kills=args.server_kills,
        lease=args.lease, concurrency=args.concurrency, seconds=args.seconds, seed=seed, workdir=args.dir,
    ))
    print(figures.table())
    for broken in figures.broken:
        print(f"BROKEN: {broken}")
    if args.dir is not None:
        (args.dir / "figures.json").write_text(json.dumps(asdict(figures), indent=2))
    return 1 if figures.broken else 0


if __name__ == "__main__":
    sys.exit(main())
