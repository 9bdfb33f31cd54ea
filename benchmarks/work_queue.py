"""Benchmark: the work queue's bookkeeping cost, against raw JetStream in the same run.

Two measurements, each next to its raw baseline on the same fresh nats-server:

* deposit: ``client.deposit`` of N works (one CAS-guarded, deduplicated event each,
  buckets ensured) versus raw ``js.publish`` of the same encoded bytes, same concurrency.
* worker: a real ``workflow run`` process (thread, then process isolation) running M
  works of ``workflow.examples.add``, from process start to exit, against the same raw cycle.
* cycle: withdraw -> succeed of N works by one client (a no-wait pull, the CAS'd
  ``Started``, a heartbeat task, the CAS'd ``Succeeded`` and an ``ack_sync``) versus a raw
  pull consumer doing fetch -> publish one event -> ack_sync per message.

The machine is shared and noisy, so the ratio is the number to read; absolute rates are
printed for context. Usage: ``python benchmarks/work_queue.py [--works N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

import nats
from nats.js.api import ConsumerConfig

import workflow
from workflow import Work
from workflow.core import events as ev
from workflow.server import EmbeddedNats, prepare_log


async def raw_publish(url: str, payloads: list[tuple[str, bytes]], chunk: int = 512) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    start = time.perf_counter()
    for i in range(0, len(payloads), chunk):
        await asyncio.gather(*(js.publish(s, d) for s, d in payloads[i : i + chunk]))
    elapsed = time.perf_counter() - start
    await nc.close()
    return elapsed


async def raw_cycle(url: str, n: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe("raw.q.>", durable="raw", config=ConsumerConfig(ack_wait=30))
    start = time.perf_counter()
    for i in range(n):
        [msg] = await sub.fetch(1, timeout=5)
        await js.publish(f"raw.done.{i}", b'{"type":"started"}')
        await js.publish(f"raw.done.{i}", b'{"type":"succeeded"}')
        await msg.ack_sync()
    elapsed = time.perf_counter() - start
    await nc.close()
    return elapsed


async def worker_process(url: str, n: int, isolation: str) -> float:
    """Seconds for one ``workflow run`` process to run ``n`` deposited ``add`` works, start to exit."""
    async with workflow.connect(url) as client:
        await client.deposit([Work(pipeline=f"run-{isolation}", parameters={"a": i, "b": 1}) for i in range(n)])
    env = {**os.environ, "WORKFLOW_NATS_URL": url}
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflow", "run", f"run-{isolation}", "--function", "workflow.examples.add",
        "--isolation", isolation, "--lives", str(n), "--log-level", "warning", env=env,
    )
    if await process.wait() != 0:
        raise SystemExit(f"workflow run --isolation {isolation} failed")
    return time.perf_counter() - start


async def main(n: int, worker_works: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(tmp, port=-1) as server:
        await prepare_log(server.url)
        nc = await nats.connect(server.url)
        await nc.jetstream().add_stream(name="RAW", subjects=["raw.>"])
        await nc.close()

        works = [Work(pipeline="bench", parameters={"i": i, "a": 1, "b": 2}) for i in range(n)]
        raw_payloads = [
            (f"raw.q.{i}", ev.encode(ev.Deposited(work_id=str(i), pipeline="bench", time=0.0, work=w)))
            for i, w in enumerate(works)
        ]
        raw_deposit = await raw_publish(server.url, raw_payloads)
        async with workflow.connect(server.url) as client:
            start = time.perf_counter()
            await client.deposit(works)
            our_deposit = time.perf_counter() - start

        raw = await raw_cycle(server.url, n)
        async with workflow.connect(server.url) as client:
            start = time.perf_counter()
            for _ in range(n):
                work = await client.withdraw("bench")
                await client.succeed(work, {"sum": 3})
            ours = time.perf_counter() - start

        runs = {isolation: await worker_process(server.url, worker_works, isolation) for isolation in ("thread", "process")}

    print(f"\n{n:,} works on one nats-server (ratio = workflow rate / raw JetStream rate, same run)\n")
    print("| operation | raw JetStream | workflow | ratio |")
    print("|---|---|---|---|")
    print(f"| deposit | {n / raw_deposit:,.0f}/s | {n / our_deposit:,.0f}/s | {raw_deposit / our_deposit:.2f} |")
    print(f"| withdraw + succeed, one worker | {n / raw:,.0f}/s | {n / ours:,.0f}/s | {raw / ours:.2f} |")
    for isolation, seconds in runs.items():
        print(f"| `workflow run --isolation {isolation}`, {worker_works:,} works of `add`, process start to exit "
              f"| {n / raw:,.0f}/s | {worker_works / seconds:,.0f}/s | {raw * worker_works / (n * seconds):.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=5000, help="number of works (default 5000)")
    parser.add_argument("--worker-works", type=int, default=500, help="works for each worker process (default 500)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.works, arguments.worker_works))
