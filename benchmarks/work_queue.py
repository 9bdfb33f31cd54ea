"""Benchmark: the work queue end to end, against raw JetStream measured in the same run.

Every rate is printed next to its raw baseline on the same fresh nats-server, and the
ratio is the number to read (the machine is shared and noisy; absolute rates are context):

* raw: batched ``js.publish`` (chunks of 512 awaited together) and batched fetch (256) +
  ack. A work's lifecycle is 3 publishes (Deposited, Started, Succeeded) + 1 fetch + 1
  ack, so its raw ceiling is ``1 / (3/publish + 1/fetch_ack)``.
* deposit: ``client.deposit`` of N works in one call, against the raw publish rate.
* run: 2 ``workflow run`` processes (started and ready before the clock starts) running N
  works of ``workflow.examples.add``; timed from the first deposit until the results
  service (the projector + DuckDB, in its own process) reports N successes. Thread
  isolation with ``--concurrency`` 16 and 64, then the default process isolation (a pool of
  warm children, ``--concurrency`` 1, 2 and 8), against the lifecycle ceiling. Short works
  gain from more slots than cores: each slot spends most of a work waiting for its two
  CAS round trips, and the more works a worker holds, the more of their messages share
  one network write, one pull and one projector transaction.
* latency: an idle worker, one work deposited at a time; deposit -> ``Started`` (the
  worker's clock and ours are the same machine's), p50 and p99.

``--baseline SRC`` also runs every mode with the workers *and the projector* importing
``workflow`` from another source tree (``SRC`` put first on ``PYTHONPATH``: e.g. a copy of
``src`` before a change), so a change is measured against what it replaces in one run, on
one server. Each row starts its own projector (the baseline's and today's keep separate
databases) and waits until it has caught up with the log before the clock starts.

Usage: ``python benchmarks/work_queue.py [--works N] [--repeat R] [--baseline SRC]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import nats
from nats.js.api import ConsumerConfig

import workflow
from workflow import Work
from workflow.core import events as ev
from workflow.core.errors import WorkflowError
from workflow.log import jsapi
from workflow.server import EmbeddedNats, prepare_log

WORKERS = 2
PROJECTOR = (
    "import asyncio, sys\n"
    "from workflow.results.service import run_projector_service\n"
    "try:\n    from workflow.log.eventloop import run\n"  # uvloop, as `workflow server` runs it
    "except ImportError:\n    run = asyncio.run\n"  # a --baseline tree from before it
    "run(run_projector_service(sys.argv[1], sys.argv[2], asyncio.Event()))\n"
)


async def raw_publish(url: str, payloads: list[tuple[str, bytes]], chunk: int = 512) -> float:
    """Seconds to publish ``payloads`` to JetStream in concurrent chunks (the raw deposit)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    start = time.perf_counter()
    for i in range(0, len(payloads), chunk):
        await asyncio.gather(*(js.publish(s, d) for s, d in payloads[i : i + chunk]))
    elapsed = time.perf_counter() - start
    await nc.close()
    return elapsed


async def raw_fetch_ack(url: str, n: int, batch: int = 256) -> float:
    """Seconds to fetch and ack ``n`` messages from ``raw.q.>`` in batches."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe("raw.q.>", durable="raw", config=ConsumerConfig(ack_wait=60, max_ack_pending=-1))
    start, taken = time.perf_counter(), 0
    while taken < n:
        messages = await sub.fetch(min(batch, n - taken), timeout=5)
        for message in messages:
            await message.ack()
        taken += len(messages)
    await nc.flush()
    elapsed = time.perf_counter() - start
    await nc.close()
    return elapsed


async def raw_rates(url: str, works: list[Work]) -> dict[str, float]:
    payloads = [(f"raw.q.{i}", ev.encode(ev.Deposited(work_id=str(i), pipeline="raw", time=0.0, work=w)))
                for i, w in enumerate(works)]
    nc = await nats.connect(url)
    with contextlib.suppress(Exception):
        await nc.jetstream().delete_stream("RAW")
    await nc.jetstream().add_stream(name="RAW", subjects=["raw.>"])
    await nc.close()
    publish = len(works) / await raw_publish(url, payloads)
    fetch_ack = len(works) / await raw_fetch_ack(url, len(works))
    return {"publish": publish, "fetch_ack": fetch_ack, "ceiling": 1 / (3 / publish + 1 / fetch_ack)}


async def deposit_rate(url: str, works: list[Work]) -> float:
    async with workflow.connect(url) as client:
        start = time.perf_counter()
        await client.deposit(works)
        return len(works) / (time.perf_counter() - start)


@contextlib.contextmanager
def processes(commands: list[list[str]], env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [subprocess.Popen(command, env=env) for command in commands]
    try:
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 120.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: {what} did not happen within {timeout}s")
        await asyncio.sleep(interval)


async def successes(client: workflow.Client, pipeline: str) -> int:
    try:
        return int((await client.results.pipelines()).get(pipeline, {}).get("success", 0))
    except WorkflowError:
        return -1  # the results service is not answering yet


async def run_round(url: str, pipeline: str, n: int) -> float:
    """Deposit ``n`` works and time until the results service counts them all successful."""
    async with workflow.connect(url) as client:
        before = await successes(client, pipeline)
        works = [Work(pipeline=pipeline, parameters={"a": i, "b": 1}) for i in range(n)]
        start = time.perf_counter()
        await client.deposit(works)

        async def done() -> bool:
            return await successes(client, pipeline) >= before + n

        await until(done, f"{n} successes in {pipeline}")
        return n / (time.perf_counter() - start)


def worker_command(pipeline: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "workflow", "run", pipeline, "--function", "workflow.examples.add",
            "--log-level", "warning", *options]


async def run_rates(
    url: str, tmp: str, n: int, repeat: int, modes: dict[str, list[str]], baseline: str | None = None
) -> dict[str, float]:
    """Works/s end to end for each mode: the best of ``repeat`` rounds, after a warm-up;
    with ``baseline``, each mode again with workers importing workflow from there."""
    env = {**os.environ, "WORKFLOW_NATS_URL": url}
    base_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [baseline, env.get("PYTHONPATH")]))}
    runs = [(mode, options, env) for mode, options in modes.items()]
    if baseline:
        runs = [run for mode, options in modes.items()
                for run in ((f"{mode} (baseline)", options, base_env), (mode, options, env))]
    rates: dict[str, float] = {}
    for mode, options, worker_env in runs:
        database = Path(tmp) / ("results-baseline.duckdb" if worker_env is base_env else "results.duckdb")
        with processes([[sys.executable, "-c", PROJECTOR, url, str(database)]], worker_env):
            async with workflow.connect(url) as client:
                await until(lambda: _caught_up(client), "the results service caught up with the log")
            pipeline = f"run-{len(rates)}"
            with processes([worker_command(pipeline, *options) for _ in range(WORKERS)], worker_env):
                await run_round(url, pipeline, 200)  # warm-up: workers connected, children warm
                rates[mode] = max([await run_round(url, pipeline, n) for _ in range(repeat)])
    return rates


async def _caught_up(client: workflow.Client) -> bool:
    """The results service answers and holds the whole log."""
    try:
        position = await client.results.position()
    except WorkflowError:
        return False  # not answering yet
    return position >= await jsapi.last_sequence(client.nc)


async def _answering(client: workflow.Client) -> bool:
    return await successes(client, "none") >= 0


async def latency(url: str, samples: int) -> tuple[float, float]:
    """Deposit -> Started with an idle thread worker, one work at a time: (p50, p99) in ms."""
    env = {**os.environ, "WORKFLOW_NATS_URL": url}
    delays = []
    with processes([worker_command("latency", "--isolation", "thread")], env):
        async with workflow.connect(url) as client:
            finished: asyncio.Queue[ev.AnyEvent] = asyncio.Queue()

            async def heard(msg: object) -> None:
                await finished.put(ev.decode(msg.data))  # type: ignore[attr-defined]

            await client.nc.subscribe("wf.latency.*.started", cb=heard)
            for i in range(samples + 20):
                await asyncio.sleep(0.02)  # the worker is idle (asleep on its buckets) again
                deposited = time.time()
                await client.deposit(Work(pipeline="latency", parameters={"a": i, "b": 1}))
                started = await asyncio.wait_for(finished.get(), 60)
                if i >= 20:  # the first ones wait for the worker to start
                    delays.append((started.time - deposited) * 1000)
    quantiles = statistics.quantiles(delays, n=100)
    return quantiles[49], quantiles[98]


async def main(n: int, repeat: int, samples: int, baseline: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(tmp, port=-1) as server:
        await prepare_log(server.url)
        works = [Work(pipeline="bench", parameters={"i": i, "a": 1, "b": 2}) for i in range(n)]
        raw = await raw_rates(server.url, works)
        ours = max([await deposit_rate(server.url, [Work(pipeline=f"dep{r}", parameters={"i": i, "a": 1, "b": 2})
                                                    for i in range(n)]) for r in range(repeat)])
        p50, p99 = await latency(server.url, samples)
        modes = {
            "thread, --concurrency 16": ["--isolation", "thread", "--concurrency", "16"],
            "thread, --concurrency 64": ["--isolation", "thread", "--concurrency", "64"],
            "process (warm pool), --concurrency 1": [],
            "process (warm pool), --concurrency 2": ["--concurrency", "2"],
            "process (warm pool), --concurrency 8": ["--concurrency", "8"],
        }
        rates = await run_rates(server.url, tmp, n, repeat, modes, baseline)

    print(f"\n{n:,} works, {WORKERS} worker processes; ratio = workflow rate / raw JetStream rate, same run\n")
    print("| measurement | raw JetStream | workflow | ratio |")
    print("|---|---|---|---|")
    print(f"| deposit in bulk | {raw['publish']:,.0f}/s publish | {ours:,.0f}/s | {ours / raw['publish']:.2f} |")
    for mode, rate in rates.items():
        print(f"| `workflow run` x{WORKERS}, {mode}, first deposit -> results service reports all "
              f"| {raw['ceiling']:,.0f}/s lifecycle ceiling | {rate:,.0f}/s | {rate / raw['ceiling']:.2f} |")
    print(f"| deposit -> start, idle worker ({samples} works) | | p50 {p50:.1f} ms, p99 {p99:.1f} ms | |")
    print(f"\nraw: publish {raw['publish']:,.0f}/s, fetch+ack {raw['fetch_ack']:,.0f}/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=6000, help="works per measurement (default 6000)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds per measurement; the best counts (default 2)")
    parser.add_argument("--samples", type=int, default=200, help="works timed for latency (default 200)")
    parser.add_argument("--baseline", help="also run every mode with workflow imported from this source tree")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.works, arguments.repeat, arguments.samples, arguments.baseline))
