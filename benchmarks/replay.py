"""Benchmark: replay rate of the projector against nats-py's raw read rate, and query latency.

    .venv/bin/python benchmarks/replay.py                 # 1,000,000 works (~1.4 M events)
    .venv/bin/python benchmarks/replay.py --works 100000  # a quick run

It starts a throw-away nats-server (or uses ``--nats URL``, which must hold an empty
WORKFLOW stream), writes a synthetic log (pre-encoded events carrying the headers a real
append stores, each CAS checked by the stream; generation is not what is measured), then
in the same run:

1. the ceiling: nats-py reading the whole stream with an ordered consumer into a
   callback that only counts;
2. ``workflow replay``'s engine folding the same stream into a fresh DuckDB file;
3. the results service over that database: p50/p99 latency of ``count`` and of a
   filtered ``query``, measured from the client through NATS.

It prints a markdown table to paste in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import nats
from ulid import ULID

import workflow
from workflow.core.subjects import STREAM
from workflow.log import connection
from workflow.results.projector import replay
from workflow.results.service import run_projector_service
from workflow.server import EmbeddedNats, prepare_log

PIPELINES = [f"pipeline-{i}" for i in range(10)]
SITES = ["chime", "kko", "gbo", "local"]
USERS = ["ann", "bob", "cyd", None]


Event = tuple[str, bytes, dict[str, str]]


def synthetic_log(works: int, finished: float, seed: int = 1) -> tuple[list[Event], list[str]]:
    """(subject, payload, headers) of a log, and the work ids.

    Every work is deposited (one per 10 ms of creation time, ULID ids from that time);
    a share of them is started a few thousand deposits later and finishes after a few
    thousand more (90% succeed), interleaved in the log as on a live system. Each event
    carries the headers a real append stores with it (its id, and the compare-and-set pair
    naming the sequence of the work's previous event): every reader parses them, so a log
    without them would flatter the replay.
    """
    rng = random.Random(seed)
    now = time.time() - 86400
    encode = msgspec.json.encode
    template = msgspec.to_builtins(workflow.Work(pipeline="x"))
    keyed: list[tuple[float, str, bytes]] = []
    ids = []
    for i in range(works):
        created = now + i * 0.01
        work_id = str(ULID.from_timestamp(created))
        ids.append(work_id)
        pipeline, site, priority = PIPELINES[i % 10], SITES[i % 4], 1 + i % 5
        work = dict(template, pipeline=pipeline, site=site, priority=priority, user=USERS[i % 4], id=work_id,
                    status="queued", creation=created, parameters={"beam": i % 1024, "dm": rng.random() * 1000},
                    tags=["survey", f"beam-{i % 1024}"], event=[10_000_000 + i // 3])
        base = {"work_id": work_id, "pipeline": pipeline, "id": f"E{i:025d}", "by": "bench:1", "v": 1}
        keyed.append((i, f"wf.{pipeline}.{work_id}.queued.{site}.{priority}",
                      encode({"type": "deposited", **base, "time": created, "work": work})))
        if rng.random() < finished:
            start_at = i + rng.randint(10, 5000)
            stop_at = start_at + rng.randint(10, 5000)
            started, stopped = now + start_at * 0.01, now + stop_at * 0.01
            keyed.append((start_at + 0.5, f"wf.{pipeline}.{work_id}.started", encode(
                {"type": "started", **base, "id": f"S{i:025d}", "time": started, "attempt": 1, "queue_seq": i + 1,
                 "host": "bench"})))
            if rng.random() < 0.9:
                keyed.append((stop_at + 0.5, f"wf.{pipeline}.{work_id}.succeeded", encode(
                    {"type": "succeeded", **base, "id": f"D{i:025d}", "time": stopped, "attempt": 1,
                     "results": {"snr": rng.random() * 50}, "products": [f"/data/{work_id}.h5"]})))
            else:
                keyed.append((stop_at + 0.5, f"wf.{pipeline}.{work_id}.failed", encode(
                    {"type": "failed", **base, "id": f"F{i:025d}", "time": stopped, "attempt": 1,
                     "reason": "error", "will_retry": False, "error": "ValueError: bad beam"})))
    keyed.sort(key=lambda item: item[0])
    log: list[Event] = []
    last_seq: dict[str, int] = {}  # work id -> sequence of its last event (a fresh stream numbers from 1)
    for seq, (_, subject, data) in enumerate(keyed, 1):
        work_id = subject.split(".")[2]
        log.append((subject, data, {
            "Nats-Msg-Id": msgspec.json.decode(data)["id"],
            "Nats-Expected-Last-Subject-Sequence": str(last_seq.get(work_id, 0)),
            "Nats-Expected-Last-Subject-Sequence-Subject": f"wf.*.{work_id}.>",
        }))
        last_seq[work_id] = seq
    return log, ids


async def publish(nc: nats.aio.client.Client, log: list[Event], chunk: int = 1000) -> float:
    """JetStream publishes in concurrent chunks, each acknowledged (the stream checks every
    event's CAS, and a refused one raises here instead of shifting every later sequence);
    events/s. Core publishes were faster but the server may drop some under a burst, which
    with the CAS headers leaves the rest of the log refused."""
    js = nc.jetstream(timeout=30)
    start = time.perf_counter()
    for i in range(0, len(log), chunk):
        await asyncio.gather(*(js.publish(subject, data, headers=headers)
                               for subject, data, headers in log[i : i + chunk]))
    return len(log) / (time.perf_counter() - start)


async def raw_read_rate(nc: nats.aio.client.Client, total: int) -> float:
    """nats-py alone: an ordered consumer over the whole stream, counting in a callback
    (``nc`` as ``nats.connect`` makes it: the ceiling; or our ``Connection``)."""
    seen = 0
    done = asyncio.Event()

    async def count(msg) -> None:
        nonlocal seen
        seen += 1
        if seen >= total:
            done.set()

    start = time.perf_counter()
    sub = await nc.jetstream().subscribe("wf.>", stream=STREAM, cb=count, ordered_consumer=True,
                                         pending_msgs_limit=0, pending_bytes_limit=0)
    await done.wait()
    elapsed = time.perf_counter() - start
    await sub.unsubscribe()
    return total / elapsed


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def latencies(url: str, db: Path, rounds: int, ids: list[str]) -> dict[str, tuple[float, float]]:
    stop = asyncio.Event()
    service = asyncio.create_task(run_projector_service(url, db, stop))
    try:
        async with workflow.connect(url) as client:
            while True:
                try:
                    await client.results.position()
                    break
                except workflow.errors.WorkflowError:
                    await asyncio.sleep(0.1)
            rng = random.Random(2)
            cases = {
                "count (all works)": lambda: client.results.count(),
                "count (pipeline + status)": lambda: client.results.count(
                    pipeline=rng.choice(PIPELINES), status="success"),
                "query (pipeline + status + site, limit 100)": lambda: client.results.query(
                    pipeline=rng.choice(PIPELINES), status="queued", site=rng.choice(SITES), limit=100),
                "query (tag, newest 10)": lambda: client.results.query(tags=f"beam-{rng.randrange(1024)}", limit=10),
                "get (one work by id)": lambda: client.results.get(rng.choice(ids)),
                "history (one work's events)": lambda: client.results.history(rng.choice(ids)),
            }
            found = {}
            for name, call in cases.items():
                await call()  # warm up
                samples = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    await call()
                    samples.append((time.perf_counter() - start) * 1000)
                found[name] = percentiles(samples)
            return found
    finally:
        stop.set()
        await service


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works", type=int, default=1_000_000, help="works in the synthetic log")
    parser.add_argument("--finished", type=float, default=0.2, help="share of works started and finished")
    parser.add_argument("--rounds", type=int, default=200, help="requests per latency measurement")
    parser.add_argument("--nats", help="use this server (its WORKFLOW stream must be empty)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="workflow-bench-") as scratch:
        embedded = None if args.nats else EmbeddedNats(Path(scratch) / "nats", port=-1).start()
        url = args.nats or embedded.url
        try:
            await prepare_log(url)
            nc = await nats.connect(url)
            log, ids = synthetic_log(args.works, args.finished)
            total = len(log)
            print(f"publishing {total:,} events for {args.works:,} works ...", file=sys.stderr)
            publish_rate = await publish(nc, log)
            del log
            print("reading with nats-py alone ...", file=sys.stderr)
            cpu_start = time.process_time()
            ceiling = await raw_read_rate(nc, total)
            ceiling_cpu = (time.process_time() - cpu_start) / total
            await nc.close()
            ours = await connection.connect(url)  # as `workflow replay` connects
            print("reading with our connection (its header parser) ...", file=sys.stderr)
            our_read = await raw_read_rate(ours, total)
            print("replaying into DuckDB ...", file=sys.stderr)
            db = Path(scratch) / "replay.duckdb"
            start, cpu_start = time.perf_counter(), time.process_time()
            reached = await replay(ours, db)
            replay_rate = total / (time.perf_counter() - start)
            replay_cpu = (time.process_time() - cpu_start) / total  # this process's threads: DuckDB's too
            assert reached == total, (reached, total)
            await ours.close()
            print("measuring queries ...", file=sys.stderr)
            found = await latencies(url, db, args.rounds, ids)
        finally:
            if embedded is not None:
                embedded.stop()

    print(f"\n| measure ({total:,} events, {args.works:,} works) | value |")
    print("| --- | --- |")
    print(f"| generate the log (acknowledged publishes, real headers) | {publish_rate:,.0f} events/s |")
    print(f"| nats-py raw read (ordered consumer, ceiling) | {ceiling:,.0f} events/s |")
    print(f"| the same read through `workflow.log.connection` | {our_read:,.0f} events/s |")
    print(f"| replay into DuckDB (`workflow replay`) | {replay_rate:,.0f} events/s |")
    print(f"| replay / ceiling | {replay_rate / ceiling:.0%} |")
    print(f"| CPU per event: raw read / replay (all threads) | {ceiling_cpu * 1e6:.1f} µs / {replay_cpu * 1e6:.1f} µs "
          f"({replay_cpu / ceiling_cpu:.1f}×) |")
    for name, (p50, p99) in found.items():
        print(f"| {name} via results service, p50 / p99 | {p50:.1f} ms / {p99:.1f} ms |")


if __name__ == "__main__":
    asyncio.run(main())
