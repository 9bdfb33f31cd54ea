"""Benchmark: a long, steady flow of works: RSS of the workers and the projector, and the
projector's lag, sampled as it goes (issue 8: "RSS flat while 1,000,000 works flow").

One fresh embedded nats-server, the projector + results service in its own process, 2
``workflow run`` processes (thread isolation, ``--concurrency 16``) running the no-op
``workflow.examples.add``. The depositor keeps about ``--backlog`` works queued until
``--works`` have been deposited. Every ``--every`` successes it samples:

* RSS (``/proc/PID/status`` VmRSS) of each worker and of the projector process;
* the projector's lag: the log's last sequence minus the read model's position (events);
* the rate since the last sample.

What to read: the RSS columns staying flat (a leak grows with the count of works), and the
lag staying bounded (the projector keeps up). The p50/p99 of the lag samples close the run.
Usage: ``python benchmarks/sustained.py [--works 1000000] [--every 50000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import workflow
from workflow import Work
from workflow.server import EmbeddedNats, prepare_log

sys.path.insert(0, str(Path(__file__).parent))
from work_queue import PROJECTOR, _answering, processes, successes, until, worker_command

PIPELINE = "sustained"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def log_head(client: workflow.Client) -> int:
    info = await client.nc.jetstream().stream_info("WORKFLOW")
    return int(info.state.last_seq)


async def main(n: int, every: int, backlog: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(tmp, port=-1) as server:
        url = server.url
        await prepare_log(url)
        env = {**os.environ, "WORKFLOW_NATS_URL": url}
        projector = [sys.executable, "-c", PROJECTOR, url, str(Path(tmp) / "results.duckdb")]
        workers = [worker_command(PIPELINE, "--isolation", "thread", "--concurrency", "16") for _ in range(2)]
        with processes([projector], env) as [proj], processes(workers, env) as procs:
            async with workflow.connect(url) as client:
                await until(lambda: _answering(client), "the results service answering")
                print(f"{n:,} works, 2 workers (thread, concurrency 16), samples every {every:,}; load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                print("| succeeded | works/s | worker RSS MiB | projector RSS MiB | projector lag (events) |")
                print("|---|---|---|---|---|", flush=True)
                deposited, done, lags = 0, 0, []
                next_sample, began, last = every, time.perf_counter(), (time.perf_counter(), 0)
                while done < n:
                    if deposited < n and deposited - done < backlog:
                        chunk = min(backlog // 2, n - deposited)
                        await client.deposit([Work(pipeline=PIPELINE, parameters={"a": i, "b": 1})
                                              for i in range(deposited, deposited + chunk)])
                        deposited += chunk
                    else:
                        await asyncio.sleep(0.2)
                    done = max(done, await successes(client, PIPELINE))
                    lag = await log_head(client) - await client.results.position()
                    lags.append(lag)
                    if done >= next_sample or done >= n:
                        now = time.perf_counter()
                        rate = (done - last[1]) / (now - last[0])
                        last = (now, done)
                        workers_rss = " / ".join(f"{rss_mib(p.pid):.0f}" for p in procs)
                        print(f"| {done:,} | {rate:,.0f} | {workers_rss} | {rss_mib(proj.pid):.0f} | {lag:,} |",
                              flush=True)
                        next_sample += every
                q = statistics.quantiles(lags, n=100)
                print(f"\n{n:,} works in {time.perf_counter() - began:,.0f} s; projector lag p50 {q[49]:,.0f}, "
                      f"p99 {q[98]:,.0f} events ({len(lags):,} samples); load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=50_000, help="sample every this many successes")
    parser.add_argument("--backlog", type=int, default=20_000, help="works kept queued")
    args = parser.parse_args()
    asyncio.run(main(args.works, args.every, args.backlog))
