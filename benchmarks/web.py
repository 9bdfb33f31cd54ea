"""Benchmark: the web UI's page latency against the results service's own answer time.

    .venv/bin/python benchmarks/web.py                  # 1,000,000 works (the issue's size)
    .venv/bin/python benchmarks/web.py --works 100000   # a quick run

Writes replay.py's synthetic log (20% of the works finished, 10% of those failed) into a
throw-away nats-server, starts ``workflow server --nats URL`` (its projector folds the log)
and ``workflow web --nats URL`` (a process of its own, so its memory is its own), waits
until the read model holds every work, adds a work in each of ``--pipelines`` pipelines,
then in the same run measures, one request at a time from this process:

- ``GET /works?q=status:failure`` (a page of 50, its count) and the results service asked
  the same two questions directly (``query`` + ``count``, ``fresh``), and their ratio;
- ``GET /works/ID`` (a random work) and ``get`` + ``history`` asked directly;
- ``GET /`` (the dashboard: counts, throughput, buckets, schedules) and the client asked
  the same four questions directly;
- how soon a deposit shows in an open dashboard's live counts (server-sent events);
- the web process's RSS while ``--pages`` live pages stay open for ``--live-seconds``
  (half dashboards, half event feeds) and works keep arriving.

The difference is what the web layer costs: HTTP, rendering, and its own NATS round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats

import workflow
from replay import publish, synthetic_log
from workflow import Work
from workflow.server import EmbeddedNats, prepare_log


def p50_p95(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


async def timed(call: Callable[[], Awaitable[Any]], rounds: int) -> tuple[float, float]:
    await call()  # warm up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return p50_p95(samples)


def start(args: list[str], ready: str, log: Path) -> tuple[subprocess.Popen[bytes], re.Match[str]]:
    """A ``workflow`` process, once its log shows ``ready`` (a regex)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_NATS_")}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "workflow.cli", *args], stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(ready, log.read_text(errors="replace"))
        if found:
            return process, found
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"workflow {args[0]} did not start:\n{log.read_text()[-2000:]}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def counts_events(http: aiohttp.ClientSession) -> Any:
    """The dashboard's live counts, as a browser's EventSource reads them."""
    async with http.get("/live/counts") as response:
        kind = None
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "counts":
                yield json.loads(line[6:])


async def deposit_to_dashboard(client: workflow.Client, http: aiohttp.ClientSession, rounds: int) -> list[float]:
    """Seconds from a deposit's acknowledgement (it is in the log) to the open dashboard's
    counts holding it."""
    samples = []
    stream = counts_events(http)
    await anext(stream)  # the counts when the page opened
    await client.deposit(Work(pipeline="probe"))  # its bucket exists before the clock starts
    for number in range(2, rounds + 2):
        await client.deposit(Work(pipeline="probe"))
        start = time.perf_counter()  # the deposit is in the log
        while (await anext(stream)).get("probe", {}).get("total", 0) < number:
            pass
        samples.append(time.perf_counter() - start)
    await stream.aclose()
    return samples


async def open_pages_rss(client: workflow.Client, web: str, pid: int, pages: int,
                         seconds: float) -> tuple[float, float, float, int]:
    """RSS of the web process (MiB) after ``pages`` live pages opened, at the end and at
    most, while works are deposited (10 a second) for ``seconds``; and the events read."""
    received = 0

    async def page(path: str) -> None:
        nonlocal received
        async with aiohttp.ClientSession(web) as http, http.get(path) as response:
            async for _line in response.content:
                received += 1

    readers = [asyncio.create_task(page("/live/counts" if i % 2 else "/live/events")) for i in range(pages)]
    await asyncio.sleep(2)
    first = peak = rss_mib(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await client.deposit([Work(pipeline="live-load") for _ in range(10)])
        peak = max(peak, rss_mib(pid))
        await asyncio.sleep(1)
    last = rss_mib(pid)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return first, last, peak, received


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works", type=int, default=1_000_000, help="works in the synthetic log")
    parser.add_argument("--finished", type=float, default=0.2, help="share of works started and finished")
    parser.add_argument("--rounds", type=int, default=200, help="requests per measurement")
    parser.add_argument("--pipelines", type=int, default=200, help="pipelines on the dashboard (one work each past 10)")
    parser.add_argument("--pages", type=int, default=100, help="live pages held open for the memory measure")
    parser.add_argument("--live-seconds", type=float, default=600, help="how long they are held (the issue: 10 min)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="workflow-bench-web-") as scratch:
        embedded = EmbeddedNats(Path(scratch) / "nats", port=-1).start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            await prepare_log(embedded.url)
            nc = await nats.connect(embedded.url)
            log, ids = synthetic_log(args.works, args.finished)
            print(f"publishing {len(log):,} events for {args.works:,} works ...", file=sys.stderr)
            await publish(nc, log)
            del log
            await nc.close()
            server, _ = start(["server", "--nats", embedded.url, "--data-dir", str(Path(scratch) / "server"),
                               "--log-level", "warning"], r"workflow server ready", Path(scratch) / "server.log")
            processes.append(server)
            web_process, found = start(["web", "--nats", embedded.url, "--port", "0"],
                                       r"workflow web UI on (http://\S+?)/? ", Path(scratch) / "web.log")
            processes.append(web_process)
            web = found.group(1)
            async with workflow.connect(embedded.url) as client, aiohttp.ClientSession(web) as http:
                print("waiting for the projector to hold every work ...", file=sys.stderr)
                started = time.monotonic()
                while True:
                    with contextlib.suppress(workflow.errors.WorkflowError):
                        if await client.results.count(fresh=True) == args.works:
                            break
                    await asyncio.sleep(0.5)
                fold_seconds = time.monotonic() - started
                extra = [Work(pipeline=f"more-{i}") for i in range(max(0, args.pipelines - 10))]
                if extra:
                    await client.deposit(extra)
                pipelines = len(await client.results.pipelines(fresh=True))
                failures = await client.results.count(status="failure")
                rng = random.Random(3)

                async def page(path: str) -> None:
                    async with http.get(path) as response:
                        assert response.status == 200, (path, response.status, await response.text())
                        await response.read()

                async def direct_search() -> None:
                    await asyncio.gather(client.results.query(status=["failure"], limit=50, fresh=True),
                                         client.results.count(status=["failure"], fresh=True))

                async def direct_work() -> None:
                    work_id = rng.choice(ids)
                    await client.results.get(work_id, fresh=True)
                    await client.results.history(work_id)

                async def direct_dashboard() -> None:
                    await asyncio.gather(client.results.pipelines(fresh=True),
                                         client.results.throughput(60, fresh=True), client.buckets(),
                                         client.schedules())

                print("measuring pages ...", file=sys.stderr)
                rows = {
                    "GET /works?q=status:failure (page of 50 + count)": await timed(
                        lambda: page("/works?q=status:failure"), args.rounds),
                    "results service: query + count (same filters, fresh)": await timed(direct_search, args.rounds),
                    "GET /works/ID": await timed(lambda: page(f"/works/{rng.choice(ids)}"), args.rounds),
                    "results service: get + history (fresh)": await timed(direct_work, args.rounds),
                    f"GET / (dashboard, {pipelines} pipelines)": await timed(lambda: page("/"), args.rounds),
                    "client: pipelines + throughput + buckets + schedules (fresh)": await timed(
                        direct_dashboard, args.rounds),
                    "GET /api/works?q=status:failure": await timed(
                        lambda: page("/api/works?q=status:failure"), args.rounds),
                }
                print("measuring deposit -> open dashboard ...", file=sys.stderr)
                seen = sorted(await deposit_to_dashboard(client, http, 20))
                print(f"holding {args.pages} live pages for {args.live_seconds:g} s ...", file=sys.stderr)
                rss = await open_pages_rss(client, web, web_process.pid, args.pages, args.live_seconds)
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
            embedded.stop()

    print(f"\n| measure ({args.works:,} works, {failures:,} failed; projector folded the log in "
          f"{fold_seconds:.0f} s) | p50 | p95 |")
    print("| --- | --- | --- |")
    for name, (p50, p95) in rows.items():
        print(f"| {name} | {p50:.1f} ms | {p95:.1f} ms |")
    search_ratio = rows["GET /works?q=status:failure (page of 50 + count)"][1] / rows[
        "results service: query + count (same filters, fresh)"][1]
    work_ratio = rows["GET /works/ID"][1] / rows["results service: get + history (fresh)"][1]
    dashboard_ratio = rows[f"GET / (dashboard, {pipelines} pipelines)"][1] / rows[
        "client: pipelines + throughput + buckets + schedules (fresh)"][1]
    print(f"| p95 ratio web / results service: search, work page | {search_ratio:.2f}× | {work_ratio:.2f}× |")
    print(f"| p95 ratio web / client: dashboard | {dashboard_ratio:.2f}× | |")
    print(f"| a deposit seen on an open dashboard (live counts), 20 deposits | {seen[len(seen) // 2] * 1000:.0f} ms "
          f"| max {seen[-1] * 1000:.0f} ms |")
    first, last, peak, received = rss
    print(f"| web process RSS, {args.pages} live pages for {args.live_seconds:g} s ({received:,} lines sent) "
          f"| {first:.0f} → {last:.0f} MiB | peak {peak:.0f} MiB ({last - first:+.0f} MiB) |")

if __name__ == "__main__":
    asyncio.run(main())
