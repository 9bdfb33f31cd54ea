"""Benchmark: the web UI's page latency against the results service's own answer time.

    .venv/bin/python benchmarks/web.py                  # 1,000,000 works (the issue's size)
    .venv/bin/python benchmarks/web.py --works 100000   # a quick run

Writes replay.py's synthetic log (20% of the works finished, 10% of those failed) into a
throw-away nats-server, starts ``workflow server --nats URL --web-port 0`` (its projector
folds the log; its web UI serves the pages), waits until the read model holds every work,
then in the same run measures, one request at a time from this process:

- ``GET /works?q=status:failure`` (a page of 50, its count) and the results service asked
  the same two questions directly (``query`` + ``count``, ``fresh``), and their ratio;
- ``GET /works/ID`` (a random work) and ``get`` + ``history`` asked directly;
- ``GET /`` (the dashboard: counts, throughput, buckets, schedules).

The difference is what the web layer costs: HTTP, rendering, and its own NATS round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


def start_web(url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_NATS_")}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "workflow.cli", "server", "--nats", url, "--data-dir",
                                    str(data_dir), "--web-port", "0", "--log-level", "warning"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"workflow web UI on (http://\S+?)/? ", log.read_text(errors="replace"))
        if found:
            return process, found.group(1), log
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"workflow server did not start its web UI:\n{log.read_text()[-2000:]}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works", type=int, default=1_000_000, help="works in the synthetic log")
    parser.add_argument("--finished", type=float, default=0.2, help="share of works started and finished")
    parser.add_argument("--rounds", type=int, default=200, help="requests per measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="workflow-bench-web-") as scratch:
        embedded = EmbeddedNats(Path(scratch) / "nats", port=-1).start()
        process = None
        try:
            await prepare_log(embedded.url)
            nc = await nats.connect(embedded.url)
            log, ids = synthetic_log(args.works, args.finished)
            print(f"publishing {len(log):,} events for {args.works:,} works ...", file=sys.stderr)
            await publish(nc, log)
            del log
            await nc.close()
            process, web, _ = start_web(embedded.url, Path(scratch) / "server")
            async with workflow.connect(embedded.url) as client, aiohttp.ClientSession(web) as http:
                print("waiting for the projector to hold every work ...", file=sys.stderr)
                started = time.monotonic()
                while True:
                    with contextlib.suppress(workflow.errors.WorkflowError):
                        if await client.results.count(fresh=True) == args.works:
                            break
                    await asyncio.sleep(0.5)
                fold_seconds = time.monotonic() - started
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

                print("measuring ...", file=sys.stderr)
                rows = {
                    "GET /works?q=status:failure (page of 50 + count)": await timed(
                        lambda: page("/works?q=status:failure"), args.rounds),
                    "results service: query + count (same filters, fresh)": await timed(direct_search, args.rounds),
                    "GET /works/ID": await timed(lambda: page(f"/works/{rng.choice(ids)}"), args.rounds),
                    "results service: get + history (fresh)": await timed(direct_work, args.rounds),
                    "GET / (dashboard)": await timed(lambda: page("/"), args.rounds),
                    "GET /api/works?q=status:failure": await timed(
                        lambda: page("/api/works?q=status:failure"), args.rounds),
                }
        finally:
            if process is not None:
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
    print(f"| p95 ratio web / results service: search, work page | {search_ratio:.2f}× | {work_ratio:.2f}× |")


if __name__ == "__main__":
    asyncio.run(main())
