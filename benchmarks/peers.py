"""Benchmark: workflow against Dramatiq, Celery, RQ and taskiq, and the raw servers under them, in one run.

Every system runs N no-op ``add(a, b)`` tasks with 2 worker processes started by its own CLI.
A row's rate is end to end: from the first enqueue until the last task is done, as seen by
polling the system's result store (with a deadline); the table says what each system records.
Dramatiq, Celery, RQ and workflow store every result. taskiq (taskiq-nats, the closest peer:
a JetStream pull consumer) records nothing by default; its first row has no result backend and
counts completions on a core NATS subject each task announces its id on (``peers_taskiq.py``),
its second stores every result in taskiq-nats's NATS object-store result backend. The workers
are started, seen ready and warmed up (a small batch run to the end) before the clock starts.

Dramatiq, Celery and RQ get a fresh redis-server of the benchmark's making (random port, temp
dir, no persistence); workflow and taskiq a fresh nats-server each (``workflow.server.EmbeddedNats``,
the project's nats.conf, random port, temp dir). The raw baselines are measured in the same run
on the same kind of server:

* raw redis: pipelined LPUSH of N payloads, then batched RPOP + a pipelined SET per message
  (the "store the result" write): ceiling = 1 / (1/push_rate + 1/pop_and_store_rate).
* raw NATS JetStream: batched ``js.publish`` of N payloads, then batched fetch + ack. A
  workflow work's lifecycle is 3 publishes (deposited, started, succeeded) + 1 fetch + 1 ack:
  ceiling = 1 / (3/publish_rate + 1/fetch_ack_rate). A taskiq task's is 1 publish + fetch + ack
  without results, 4 JetStream requests + fetch + ack with the object store (the enqueue, and
  the put's info lookup, chunk and meta publishes), each request costed as a publish.

The machine is shared and noisy, so read the ratios (to the best peer that stores every result,
to the raw ceiling under each system), not the absolute rates. Usage::

    python benchmarks/peers.py [--works 6000] [--only dramatiq,celery,rq,taskiq,workflow] [--repeat K] [--json PATH]

Needs ``redis-server`` on PATH and ``pip install -r benchmarks/requirements-peers.txt``
(``make bench-peers`` does both).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the venv's scripts: dramatiq, celery, rq, taskiq
SYSTEMS = ("dramatiq", "celery", "rq", "taskiq", "workflow")
ON_REDIS = ("dramatiq", "celery", "rq")  # the others run on a nats-server
WORKERS = 2  # worker processes for every system
POLL = 0.01  # seconds between two looks at a result store that is not done yet
CHUNK = 512  # batch size of the raw baselines and of the result-store probes
PIPELINE = "bench"  # workflow pipeline (queue) name


@dataclass
class Row:
    """One system in one mode: the best round's times (or why it failed)."""

    system: str
    mode: str
    works: int
    seconds: float  # first enqueue -> last result stored
    enqueue_seconds: float  # first enqueue -> last enqueue returned (workers running meanwhile)
    error: str | None = None
    note: str | None = None  # what else was learned (printed under the table)

    @property
    def rate(self) -> float:
        return self.works / self.seconds if self.seconds and not self.error else 0.0

    @property
    def enqueue_rate(self) -> float:
        return self.works / self.enqueue_seconds if self.enqueue_seconds and not self.error else 0.0


def best(rows: list[Row]) -> Row:
    """Best of K: the fastest successful round (or the first failure if none succeeded)."""
    good = [row for row in rows if not row.error]
    return min(good, key=lambda row: row.seconds) if good else rows[0]


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the servers started here bind it at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deadline_for(n: int) -> float:
    """Seconds a round may take: generous (20 works/s plus a minute), never a stand-in for 'done'."""
    return 60.0 + n / 20.0


class Workers:
    """Worker processes started from their CLIs, each in its own process group (so that its
    children, pool processes or forked work horses, are stopped with it), logs in files."""

    def __init__(self, tmp: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.tmp, self.name = tmp, name
        self.env = {**os.environ, **(env or {})}
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, command: list[str]) -> None:
        log_path = self.tmp / f"{self.name}-{len(self.processes)}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=HERE, start_new_session=True,
            )
        self.processes.append((process, log_path))

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for _, path in self.processes)

    def check_alive(self) -> None:
        for process, path in self.processes:
            if process.poll() is not None:
                tail = path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} worker exited with code {process.returncode}:\n{tail}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM each process group (a warm shutdown: the queues are empty), SIGKILL stragglers."""
        for process, _ in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        for process, _ in self.processes:
            try:
                process.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):  # children left behind, or a stuck parent
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(ready: Callable[[], bool], what: str, workers: Workers, timeout: float = 60.0) -> None:
    """Poll ``ready`` until true; fail if a worker died or ``timeout`` passed."""
    end = time.monotonic() + timeout
    while not ready():
        workers.check_alive()
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not within {timeout:g}s; logs:\n{workers.logs()[-3000:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port: no RDB snapshots, no AOF, its dir in ``tmp``."""
    import redis

    directory = tmp / "redis"
    directory.mkdir()
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--logfile", str(directory / "redis.log"), "--protected-mode", "no"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        end = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > end:
                    log = (directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server did not start on port {port}:\n{log}") from None
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_stored(
    client: Any, probes: list[tuple[Any, ...]], done: Callable[[Any], bool], deadline: float, workers: Workers
) -> None:
    """Return once every probe reads as stored: ``probes`` are redis commands (name, *args), one
    per task, in enqueue order. While waiting, only the last pending probe is asked, once every
    POLL seconds (one command: the poller must not load the redis-server it measures); when it
    reads as stored, all pending probes are asked in pipelines of CHUNK and the stragglers, if
    any, are waited for the same way. Raises TimeoutError past ``deadline`` (a perf_counter time)."""

    def ask(batch: list[tuple[Any, ...]]) -> list[bool]:
        pipe = client.pipeline(transaction=False)
        for name, *args in batch:
            getattr(pipe, name)(*args)
        return [done(value) for value in pipe.execute()]

    pending = probes
    while pending:
        if ask(pending[-1:])[0]:
            chunks = [pending[first : first + CHUNK] for first in range(0, len(pending), CHUNK)]
            pending = [probe for chunk in chunks for probe, ok in zip(chunk, ask(chunk), strict=True) if not ok]
            continue
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(probes)} results not stored by the deadline")
        workers.check_alive()
        time.sleep(POLL)


def timed_rounds(system: str, mode: str, n: int, repeat: int, one_round: Callable[[], tuple[float, float]]) -> Row:
    """Best of ``repeat`` rounds of ``one_round`` (which returns (seconds, enqueue_seconds))."""
    rows = []
    for _ in range(repeat):
        try:
            seconds, enqueue_seconds = one_round()
            rows.append(Row(system, mode, n, seconds, enqueue_seconds))
        except Exception as error:  # a deadline, a dead worker, a server's refusal: the others still run
            rows.append(Row(system, mode, n, 0.0, 0.0, error=f"{type(error).__name__}: {error}".splitlines()[0]))
            break
    row = best(rows)
    print(f"  {system:9} {mode:34} {row.rate:8,.0f} works/s" + (f"  FAILED: {row.error}" if row.error else ""),
          flush=True)
    return row


def peer_env(redis_url: str) -> dict[str, str]:
    """The environment of a peer's workers: this run's redis and ``peers_tasks`` importable."""
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return {"PEERS_REDIS_URL": redis_url, "PYTHONPATH": path}


def tasks_module(redis_url: str) -> Any:
    """``peers_tasks``, imported here once the URL of this run's redis-server is known."""
    os.environ["PEERS_REDIS_URL"] = redis_url
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module("peers_tasks")


def script(name: str) -> str:
    """The venv's console script ``name`` (the peer's own CLI), or a hint to install it."""
    path = BIN / name
    if not path.exists():
        raise SystemExit(f"{name} is not installed in {BIN}: pip install -r benchmarks/requirements-peers.txt")
    return str(path)


# -- the peers ------------------------------------------------------------------------


def run_dramatiq(redis_url: str, tmp: Path, n: int, repeat: int, warmup: int) -> list[Row]:
    """Dramatiq on Redis: ``dramatiq --processes 2 --threads T`` (2 worker processes of T
    threads each: 4, as measured before, and 16, tuned as far as workflow's threads are),
    results stored by the Results middleware (Redis backend).

    Enqueue: ``add.send(i, 1)`` per task (Dramatiq has no pipelined bulk send; each send is one
    Lua-script round trip). Stored: the result key that ``RedisBackend.build_message_key`` names
    for each message exists. Ready: both worker processes logged "ready for action".

    Fair: 2 processes like everyone; 4 threads each is Dramatiq's usual shape for I/O-light
    work (its default is 8), and results are stored, which Dramatiq does not do by default."""
    import redis

    tasks = tasks_module(redis_url)
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    backend = tasks.dramatiq_backend

    def one_round(count: int) -> tuple[float, float]:
        start = time.perf_counter()
        messages = [tasks.dramatiq_add.send(i, 1) for i in range(count)]
        enqueued = time.perf_counter()
        probes = [("exists", backend.build_message_key(message)) for message in messages]
        wait_stored(client, probes, lambda v: v == 1, start + deadline_for(count), workers)
        return time.perf_counter() - start, enqueued - start

    rows = []
    for threads in (4, 16):
        mode = f"{WORKERS} processes x {threads} threads"
        with Workers(tmp, f"dramatiq-{threads}", peer_env(redis_url)) as workers:
            workers.start([script("dramatiq"), "peers_tasks:broker", "--processes", str(WORKERS),
                           "--threads", str(threads), "--queues", tasks.QUEUE])
            wait_until(lambda: workers.logs().count("Worker process is ready for action") >= WORKERS,
                       "dramatiq workers ready", workers)
            one_round(warmup)
            rows.append(timed_rounds("dramatiq", mode, n, repeat, lambda: one_round(n)))
    return rows


def run_celery(redis_url: str, tmp: Path, n: int, repeat: int, warmup: int) -> list[Row]:
    """Celery on Redis with the Redis result backend, 2 worker nodes, in two modes:
    ``--pool prefork --concurrency 1`` x2 (Celery's default pool: a consuming parent and one
    child that runs the task, per node) and ``--pool solo`` x2 (the node runs tasks itself,
    like an RQ SimpleWorker or a workflow thread worker). Log level warning (Celery's default).

    Enqueue: ``add.delay(i, 1)`` per task. Stored: ``celery-task-meta-<id>`` exists (the key
    ``backend.get_key_for_task`` names). Ready: both nodes answer ``control.ping``.

    Fair: Celery's defaults otherwise (prefetch multiplier 4, early ack, json); ``delay`` also
    subscribes the caller to each result's channel, as it does for any Celery user."""
    import redis

    tasks = tasks_module(redis_url)
    client = redis.Redis.from_url(redis_url)
    backend = tasks.celery_app.backend
    rows = []
    for mode, pool in (("prefork --concurrency 1 x2", ["--pool", "prefork", "--concurrency", "1"]),
                       ("solo x2", ["--pool", "solo"])):
        client.flushall()

        def one_round(count: int) -> tuple[float, float]:
            start = time.perf_counter()
            results = [tasks.celery_add.delay(i, 1) for i in range(count)]
            enqueued = time.perf_counter()
            probes = [("exists", backend.get_key_for_task(result.id)) for result in results]
            wait_stored(client, probes, lambda v: v == 1, start + deadline_for(count), workers)
            return time.perf_counter() - start, enqueued - start

        with Workers(tmp, f"celery-{pool[1]}", peer_env(redis_url)) as workers:
            for i in range(WORKERS):
                workers.start([script("celery"), "-A", "peers_tasks:celery_app", "worker", *pool,
                               "--hostname", f"peer{i}@%h", "--loglevel", "WARNING", "--queues", tasks.QUEUE])
            wait_until(lambda: len(tasks.celery_app.control.ping(timeout=0.5)) >= WORKERS,
                       "celery nodes answering ping", workers)
            one_round(warmup)
            rows.append(timed_rounds("celery", mode, n, repeat, lambda: one_round(n)))
    return rows


def run_rq(redis_url: str, tmp: Path, n: int, repeat: int, warmup: int) -> list[Row]:
    """RQ, 2 ``rq worker`` processes, in two modes: ``SimpleWorker`` (runs jobs in the worker
    process) and the default ``Worker`` (forks a work horse per job: the peer of workflow's
    process isolation). Log level WARNING (RQ's default INFO writes two lines per job).

    Enqueue: ``Queue.enqueue_many`` in pipelines of 512 (RQ's bulk form). Stored: the job's
    status field reads ``finished`` (RQ writes the result and the status in one transaction).
    Ready: both workers registered themselves (``Worker.all``).

    Fair: ``peers_tasks`` imports nothing heavy (Dramatiq and Celery load lazily), so a work
    horse's import of the task costs RQ no more than its own machinery."""
    import redis
    from rq import Queue, Worker

    tasks = tasks_module(redis_url)
    client = redis.Redis.from_url(redis_url)
    queue = Queue(tasks.QUEUE, connection=client)
    rows = []
    for mode, worker_class in (("SimpleWorker x2", "rq.worker.SimpleWorker"),
                               ("Worker (fork per job) x2", "rq.worker.Worker")):
        client.flushall()

        def one_round(count: int) -> tuple[float, float]:
            start = time.perf_counter()
            jobs = []
            for first in range(0, count, CHUNK):
                batch = range(first, min(count, first + CHUNK))
                jobs += queue.enqueue_many([Queue.prepare_data(tasks.add, (i, 1)) for i in batch])
            enqueued = time.perf_counter()
            probes = [("hget", job.key, "status") for job in jobs]
            wait_stored(client, probes, lambda v: v == b"finished", start + deadline_for(count), workers)
            return time.perf_counter() - start, enqueued - start

        with Workers(tmp, f"rq-{worker_class.rsplit('.', 1)[1]}", peer_env(redis_url)) as workers:
            for i in range(WORKERS):
                workers.start([script("rq"), "worker", tasks.QUEUE, "--url", redis_url, "--worker-class", worker_class,
                               "--name", f"peer{i}-{os.getpid()}", "--logging_level", "WARNING", "--path", str(HERE)])
            wait_until(lambda: len(Worker.all(connection=client)) >= WORKERS, "rq workers registered", workers)
            one_round(warmup)
            rows.append(timed_rounds("rq", mode, n, repeat, lambda: one_round(n)))
    return rows


# -- workflow -------------------------------------------------------------------------


@contextlib.contextmanager
def nats_server(tmp: Path, name: str) -> Iterator[tuple[str, int]]:
    """A fresh ``EmbeddedNats`` (the project's nats.conf) on a free port, with its HTTP monitoring
    port open too (only to see when the workers have subscribed). Yields (url, monitor port)."""
    from workflow.log.resources import data_path
    from workflow.server import EmbeddedNats

    monitor = free_port()
    config = tmp / f"{name}.conf"
    config.write_text(Path(data_path("nats.conf")).read_text() + f"\nhttp: 127.0.0.1:{monitor}\n")
    with EmbeddedNats(tmp / name, port=-1, config=config) as server:
        yield server.url, monitor


def subscribers(monitor: int, subject: str) -> int:
    """How many client connections hold a subscription on ``subject`` (the monitoring connz)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/connz?subs=1&limit=1024", timeout=2) as reply:
        connections = json.load(reply).get("connections") or []
    return sum(subject in (c.get("subscriptions_list") or []) for c in connections)


#: workflow's rows: (isolation, concurrency per worker process).
WORKFLOW_MODES = (("thread", 16), ("thread", 64), ("process", 1), ("process", 8))


def run_workflow(tmp: Path, n: int, repeat: int, warmup: int) -> list[Row]:
    """workflow on a fresh nats-server per mode, 2 ``workflow run`` processes: thread isolation
    with ``--concurrency`` 16 and 64, and the default process isolation (a warm pool) with
    ``--concurrency`` 1 and 8. Log level warning, as in ``benchmarks/work_queue.py``.

    Enqueue: ``client.deposit`` of the N works in one call (workflow's bulk form: publishes in
    concurrent chunks of 512). Stored: a work's result is stored when its ``succeeded`` event is
    in the log; counted by a consumer created just before the round, filtered on
    ``wf.bench.*.succeeded`` (its ``num_pending``). Ready: both processes subscribed to the
    bucket's wake-up subject (seen on the server's monitoring port).

    Fair: the same 2 processes; thread isolation is the peer of Dramatiq's threads and of RQ's
    SimpleWorker, process isolation (a killable child per work) that of RQ's forking Worker.
    No projector or results service runs (the peers have none): the log is the result store."""
    from workflow.server import prepare_log

    rows = []
    wake = f"wf.{PIPELINE}.*.queued.*.*"  # each worker subscribes to it once ready (Claims.watch)
    for isolation, concurrency in WORKFLOW_MODES:
        mode = f"{isolation} x2, concurrency {concurrency}"
        with nats_server(tmp, f"nats-{isolation}-{concurrency}") as (url, monitor):
            asyncio.run(prepare_log(url))
            with Workers(tmp, f"workflow-{isolation}-{concurrency}", {"WORKFLOW_NATS_URL": url}) as workers:
                for _ in range(WORKERS):
                    workers.start([sys.executable, "-m", "workflow", "run", PIPELINE,
                                   "--function", "workflow.examples.add", "--isolation", isolation,
                                   "--concurrency", str(concurrency), "--log-level", "warning"])
                wait_until(lambda: subscribers(monitor, wake) >= WORKERS, "workflow workers subscribed", workers)
                asyncio.run(workflow_round(url, warmup, workers))
                rows.append(timed_rounds("workflow", mode, n, repeat,
                                         lambda: asyncio.run(workflow_round(url, n, workers))))
    return rows


async def workflow_round(url: str, count: int, workers: Workers) -> tuple[float, float]:
    """Deposit ``count`` works and wait until ``count`` more ``succeeded`` events are in the log."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    import workflow
    from workflow import Work
    from workflow.core.subjects import STREAM

    async with workflow.connect(url) as client:
        js = client.nc.jetstream()
        counter = await js.add_consumer(STREAM, ConsumerConfig(  # durable: asking its info is no activity
            durable_name=f"bench-count-{os.getpid()}", filter_subject=f"wf.{PIPELINE}.*.succeeded",
            deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.NONE,
        ))
        works = [Work(pipeline=PIPELINE, parameters={"a": i, "b": 1}) for i in range(count)]
        start = time.perf_counter()
        await client.deposit(works)
        enqueued = time.perf_counter()
        deadline = start + deadline_for(count)
        try:
            while (stored := (await js.consumer_info(STREAM, counter.name)).num_pending) < count:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{count - stored} of {count} results not stored by the deadline")
                workers.check_alive()
                await asyncio.sleep(POLL)
            seconds = time.perf_counter() - start
        finally:
            await js.delete_consumer(STREAM, counter.name)
        return seconds, enqueued - start


# -- taskiq ---------------------------------------------------------------------------

TASKIQ_MODES = (  # (mode, store results in the NATS object store)
    ("pull batch 1, no result backend", False),
    ("pull batch 1, NATS object-store results", True),
)


def run_taskiq(tmp: Path, n: int, repeat: int, warmup: int) -> list[Row]:
    """taskiq + taskiq-nats on a fresh nats-server per mode (the same ``EmbeddedNats`` as
    workflow's), one ``taskiq worker peers_taskiq:broker --workers 2`` (2 worker processes
    under a supervisor, like Dramatiq's), log level WARNING (taskiq's INFO logs every task).

    Broker: ``PullBasedJetStreamBroker`` with taskiq-nats's defaults (one JetStream stream, one
    durable pull consumer shared by the workers, fetch batch 1, ack after the result is saved,
    up to 100 concurrent tasks per process). Two modes: no result backend (taskiq's default),
    and ``NATSObjectStoreResultBackend`` (each result a NATS object).

    Enqueue: ``await add.kiq(i, 1)`` per task (taskiq has no bulk kick; each is one JetStream
    publish awaited for its ack). Done: every task's id seen on ``peers_taskiq.DONE_SUBJECT``,
    announced by the worker after the task ran and its result (if any) was saved. Ready: both
    worker processes hold a pull request on the consumer (its ``num_waiting``).

    With results, the N results are then read back the way a taskiq user would
    (``task.get_result()``), outside the clock, and what happened goes into the row's note."""
    rows = []
    for number, (mode, results) in enumerate(TASKIQ_MODES):
        with nats_server(tmp, f"nats-taskiq-{number}") as (url, _):
            env = {"PEERS_NATS_URL": url, "PEERS_TASKIQ_RESULTS": "1" if results else "",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
            with Workers(tmp, f"taskiq-{number}", env) as workers:
                workers.start([script("taskiq"), "worker", "peers_taskiq:broker", "--workers", str(WORKERS),
                               "--log-level", "WARNING"])
                wait_until(lambda: asyncio.run(taskiq_waiting(url)) >= WORKERS,
                           "taskiq workers pulling", workers)
                asyncio.run(taskiq_round(url, results, warmup, workers))
                notes: list[str] = []
                row = timed_rounds("taskiq", mode, n, repeat,
                                   lambda: asyncio.run(taskiq_round(url, results, n, workers, notes)))  # noqa: B023
                row.note = notes[-1] if notes else None
                rows.append(row)
    return rows


async def taskiq_waiting(url: str) -> int:
    """Pull requests waiting on taskiq-nats's durable consumer (0 until a worker created it)."""
    import nats

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info("taskiq_jetstream", "taskiq_durable")
        return info.num_waiting or 0
    except Exception:  # no stream or consumer yet: no worker is up
        return 0
    finally:
        await nc.close()


async def taskiq_round(
    url: str, results: bool, count: int, workers: Workers, notes: list[str] | None = None
) -> tuple[float, float]:
    """Kick ``count`` tasks and wait until each one's id was announced done. With ``notes``
    and results, then read every result back (not timed) and append what happened."""
    import nats

    from peers_taskiq import DONE_SUBJECT, make_broker

    broker, add = make_broker(url, results)
    await broker.startup()
    counter = await nats.connect(url)
    done: set[str] = set()

    async def seen(message: Any) -> None:
        done.add(message.data.decode())

    await counter.subscribe(DONE_SUBJECT, cb=seen, pending_msgs_limit=4 * count + 65536)
    await counter.flush()  # subscribed before the first task can end
    try:
        start = time.perf_counter()
        tasks = [await add.kiq(i, 1) for i in range(count)]
        enqueued = time.perf_counter()
        ids = {task.task_id for task in tasks}
        deadline = start + deadline_for(count)
        while len(done) < count or not done.issuperset(ids):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(ids - done)} of {count} tasks not seen done by the deadline")
            workers.check_alive()
            await asyncio.sleep(POLL)
        seconds = time.perf_counter() - start
        if results and notes is not None:
            notes.append(await taskiq_read_back(tasks))
    finally:
        await counter.close()
        await broker.shutdown()
    return seconds, enqueued - start


async def taskiq_read_back(tasks: list[Any]) -> str:
    """Read every stored result with ``task.get_result()``, one after the other. Each is an
    object-store get: an info lookup and an ordered consumer of its own, which nats-py leaves
    to the server to remove once idle (some 5 s later); nats-server 2.15 caps a stream that sets
    no ``max_consumers`` at 1,000 consumers (``jetstream.limits.default_max_consumers``), so a
    fast reader hits "maximum consumers limit reached". Returns a sentence of what happened."""
    start, wrong, failure = time.perf_counter(), 0, None
    for i, task in enumerate(tasks):
        try:
            result = await task.get_result()
        except Exception as error:  # the sentence says which and where (taskiq wraps the cause)
            cause = error.__cause__ or error
            failure = (f"read {i:,} of {len(tasks):,} results back with get_result(), then "
                       f"{type(error).__name__} caused by {type(cause).__name__}: {cause}")
            break
        wrong += result.return_value != i + 1
    seconds = time.perf_counter() - start
    if failure:
        return f"taskiq object store: {failure}".splitlines()[0]
    return (f"taskiq object store: all {len(tasks):,} results read back with get_result() in {seconds:.1f}s "
            f"({len(tasks) / seconds:,.0f}/s), {wrong} wrong")


# -- raw baselines --------------------------------------------------------------------


def payloads(n: int) -> list[bytes]:
    """The bytes every raw baseline moves: a workflow ``Deposited`` event of an ``add`` work
    (a few hundred bytes, larger than a peer's message: the raw ceilings flatter no one)."""
    from workflow import Work
    from workflow.core import events as ev

    return [ev.encode(ev.Deposited(work_id=str(i), pipeline=PIPELINE, time=0.0,
                                   work=Work(pipeline=PIPELINE, parameters={"a": i, "b": 1}))) for i in range(n)]


def raw_redis(redis_url: str, n: int, repeat: int) -> dict[str, float]:
    """The redis ceiling under the peers: pipelined LPUSH of N payloads (enqueue), then batched
    RPOP (COUNT 512) with a pipelined SET per message (take + store the result): one client, no
    worker machinery. Best of ``repeat``. Returns the rates and the lifecycle ceiling."""
    import redis

    client = redis.Redis.from_url(redis_url)
    data = payloads(n)
    push = pop = float("inf")
    for _ in range(repeat):
        client.flushall()
        start = time.perf_counter()
        for first in range(0, n, CHUNK):
            pipe = client.pipeline(transaction=False)
            for payload in data[first : first + CHUNK]:
                pipe.lpush("raw:q", payload)
            pipe.execute()
        push = min(push, time.perf_counter() - start)
        start, taken = time.perf_counter(), 0
        while taken < n:
            batch = client.rpop("raw:q", CHUNK) or []
            pipe = client.pipeline(transaction=False)
            for i, _ in enumerate(batch, taken):
                pipe.set(f"raw:result:{i}", b'{"value": 3}')
            pipe.execute()
            taken += len(batch)
        pop = min(pop, time.perf_counter() - start)
    client.flushall()
    push_rate, pop_rate = n / push, n / pop
    return {"push_rate": push_rate, "pop_store_rate": pop_rate, "ceiling": 1 / (1 / push_rate + 1 / pop_rate)}


async def raw_nats_once(url: str, n: int, data: list[bytes]) -> tuple[float, float]:
    """One round of batched publishes (via ``work_queue.raw_publish``) and batched fetch + ack."""
    import nats
    from nats.js.api import ConsumerConfig

    from work_queue import raw_publish  # the project's own raw-publish baseline

    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream("RAW")
    await js.add_stream(name="RAW", subjects=["raw.>"])
    publish = await raw_publish(url, [(f"raw.q.{i}", payload) for i, payload in enumerate(data)])
    sub = await js.pull_subscribe("raw.q.>", durable="raw", config=ConsumerConfig(ack_wait=60, max_ack_pending=-1))
    start, taken = time.perf_counter(), 0
    while taken < n:
        messages = await sub.fetch(min(256, n - taken), timeout=5)
        for message in messages:
            await message.ack()
        taken += len(messages)
    await nc.flush()
    fetch_ack = time.perf_counter() - start
    await nc.close()
    return publish, fetch_ack


def raw_nats(tmp: Path, n: int, repeat: int) -> dict[str, float]:
    """The JetStream ceiling under workflow, on a fresh nats-server like workflow's own: batched
    ``js.publish`` (chunks of 512 awaited together) and batched fetch (256) + ack of N payloads.
    A work's lifecycle is 3 publishes + 1 fetch + 1 ack: ceiling = 1/(3/publish + 1/fetch_ack)."""
    data = payloads(n)
    publish = fetch_ack = float("inf")
    with nats_server(tmp, "nats-raw") as (url, _):
        for _ in range(repeat):
            p, f = asyncio.run(raw_nats_once(url, n, data))
            publish, fetch_ack = min(publish, p), min(fetch_ack, f)
    publish_rate, fetch_ack_rate = n / publish, n / fetch_ack
    return {"publish_rate": publish_rate, "fetch_ack_rate": fetch_ack_rate,
            "ceiling": 1 / (3 / publish_rate + 1 / fetch_ack_rate)}


# -- the table ------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """What was measured: the packages' and redis-server's versions, for the JSON."""
    found = {}
    for package in ("workflow", "dramatiq", "celery", "kombu", "rq", "redis", "taskiq", "taskiq-nats", "nats-py"):
        with contextlib.suppress(Exception):
            found[package] = version(package)
    with contextlib.suppress(Exception):
        answer = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        found["redis-server"] = answer.split()[2].removeprefix("v=")
    return found


RECORDS = {  # what each system keeps of a finished task, for the table
    "dramatiq": "each result (a Redis key)",
    "celery": "each result and state (a Redis key)",
    "rq": "each job's hash: status, result",
    "workflow": "every lifecycle event (deposited, started, succeeded), per-work CAS",
}


def stores_results(row: Row) -> bool:
    """Whether the row's system stored every result (taskiq only with a result backend)."""
    return row.system != "taskiq" or "results" in row.mode


def records_of(row: Row) -> str:
    if row.system == "taskiq":
        return ("each result (a NATS object: chunk + meta message)" if stores_results(row)
                else "nothing (the JetStream ack; done counted on a core NATS subject)")
    return RECORDS.get(row.system, "-")


def nats_ceiling(raw: dict[str, float], requests: int) -> float:
    """The JetStream lifecycle ceiling of ``requests`` publishes (or API requests) + fetch + ack."""
    return 1 / (requests / raw["publish_rate"] + 1 / raw["fetch_ack_rate"])


def ceiling_of(row: Row, raw: dict[str, dict[str, float]]) -> tuple[str, float | None]:
    """The raw server under the row's system and the lifecycle ceiling it allows (None if unmeasured)."""
    if row.system in ON_REDIS:
        return "raw redis", raw.get("redis", {}).get("ceiling")
    requests = 3 if row.system == "workflow" else 4 if stores_results(row) else 1
    label = f"raw JetStream, {requests} publish{'es' if requests > 1 else ''} + fetch + ack"
    return label, nats_ceiling(raw["nats"], requests) if "nats" in raw else None


def report(rows: list[Row], raw: dict[str, dict[str, float]], n: int, repeat: int, json_path: str | None) -> None:
    """Print the table (ratios to the best peer that stores every result and to the raw ceiling
    under each system, all measured in this run) and write it as JSON to ``json_path`` when given."""
    peers = [row for row in rows if row.system != "workflow" and stores_results(row) and not row.error]
    best_peer = max(peers, key=lambda row: row.rate, default=None)
    best_rate = best_peer.rate if best_peer else None

    table = []
    for row in rows:
        label, ceiling = ceiling_of(row, raw)
        table.append({
            **asdict(row), "rate": row.rate, "enqueue_rate": row.enqueue_rate, "records": records_of(row),
            "ratio_to_best_peer": row.rate / best_rate if best_rate and not row.error else None,
            "ceiling": label, "ceiling_rate": ceiling,
            "ratio_to_ceiling": row.rate / ceiling if ceiling and not row.error else None,
        })

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    best_name = f"{best_peer.system} {best_peer.mode}" if best_peer else "none measured"
    print(f"\n{n:,} no-op add(a, b) tasks, {WORKERS} worker processes each; best of {repeat}.")
    print("works/s: first enqueue -> last task done (its result stored, where the system stores one).")
    print(f"Best peer: the fastest peer that stores every result ({best_name}). "
          "Ceiling: the raw server under the system, same run.\n")
    print("| system | mode | records | works/s end to end | enqueue/s | ratio to best peer | ratio to raw ceiling |")
    print("|---|---|---|---|---|---|---|")
    for entry in table:
        if entry["error"]:
            print(f"| {entry['system']} | {entry['mode']} | {entry['records']} | FAILED: {entry['error']} | | | |")
            continue
        print(f"| {entry['system']} | {entry['mode']} | {entry['records']} | {entry['rate']:,.0f} "
              f"| {entry['enqueue_rate']:,.0f} | {fmt(entry['ratio_to_best_peer'], '.2f')} "
              f"| {fmt(entry['ratio_to_ceiling'], '.2f')} ({entry['ceiling']}) |")
    if "redis" in raw:
        r = raw["redis"]
        print(f"| raw redis | LPUSH {r['push_rate']:,.0f}/s; RPOP+SET {r['pop_store_rate']:,.0f}/s | one SET per task "
              f"| {r['ceiling']:,.0f} (ceiling) | | {fmt(r['ceiling'] / best_rate if best_rate else None, '.2f')} "
              "| 1.00 |")
    if "nats" in raw:
        r = raw["nats"]
        print(f"| raw NATS JetStream | publish {r['publish_rate']:,.0f}/s; fetch+ack {r['fetch_ack_rate']:,.0f}/s "
              f"| 3 publishes per task | {r['ceiling']:,.0f} (ceiling: 3 publishes + fetch + ack) | "
              f"| {fmt(r['ceiling'] / best_rate if best_rate else None, '.2f')} | 1.00 |")
    for row in rows:
        if row.note:
            print(f"\nNote ({row.system}, {row.mode}): {row.note}")
    if json_path:
        document = {"works": n, "workers": WORKERS, "repeat": repeat, "cpus": os.cpu_count(),
                    "python": platform.python_version(), "versions": versions(), "best_peer": best_name,
                    "rows": table, "raw": raw}
        Path(json_path).write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwritten to {json_path}")


def guarded(system: str, run: Callable[[], list[Row]], n: int) -> list[Row]:
    """Run one system; if its workers never became ready or died, a FAILED row, and go on."""
    try:
        return run()
    except Exception as error:  # workers never ready, or died: the other systems still run
        print(f"  {system}: FAILED: {error}", flush=True)
        return [Row(system, "-", n, 0.0, 0.0, error=f"{type(error).__name__}: {error}".splitlines()[0])]


def main() -> None:
    """Parse the flags, run the raw baselines and each selected system in turn, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=6000, help="tasks per system and mode (default 6000)")
    parser.add_argument("--only", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per system and mode; the best counts (default 1)")
    parser.add_argument("--warmup", type=int, default=100, help="tasks run before the clock starts (default 100)")
    parser.add_argument("--json", metavar="PATH", help="also write the table as JSON to PATH")
    arguments = parser.parse_args()
    only = [name.strip() for name in arguments.only.split(",") if name.strip()]
    unknown = set(only) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {', '.join(SYSTEMS)}")
    only = [name for name in SYSTEMS if name in only]  # the table's order, whatever the flag's
    peers = [name for name in only if name in ON_REDIS]
    if peers and shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server; `make bench-peers` does it)")
    n, repeat, warmup = arguments.works, max(1, arguments.repeat), arguments.warmup

    rows: list[Row] = []
    raw: dict[str, dict[str, float]] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as name:
        tmp = Path(name)
        if peers:
            with redis_server(tmp) as redis_url:
                print(f"redis-server at {redis_url}", flush=True)
                raw["redis"] = raw_redis(redis_url, n, repeat)
                print(f"  raw redis ceiling {raw['redis']['ceiling']:,.0f}/s", flush=True)
                runners = {"dramatiq": run_dramatiq, "celery": run_celery, "rq": run_rq}
                for peer in peers:
                    rows += guarded(peer, lambda: runners[peer](redis_url, tmp, n, repeat, warmup), n)  # noqa: B023
        if "taskiq" in only or "workflow" in only:
            raw["nats"] = raw_nats(tmp, n, repeat)
            print(f"  raw NATS JetStream ceiling {raw['nats']['ceiling']:,.0f}/s", flush=True)
        if "taskiq" in only:
            rows += guarded("taskiq", lambda: run_taskiq(tmp, n, repeat, warmup), n)
        if "workflow" in only:
            rows += guarded("workflow", lambda: run_workflow(tmp, n, repeat, warmup), n)
    report(rows, raw, n, repeat, arguments.json)
    print(f"\n(took {time.monotonic() - began:.0f}s)")


if __name__ == "__main__":
    main()
