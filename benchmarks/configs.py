"""Benchmark: pipeline configurations (issue 23's numbers).

* deploy: a configuration whose one step's matrix is 100 × 100 (10,000 works), from the
  text to every work in the log: parse + plan (pure), then the ``ConfigDeployed`` and
  ``RunStarted`` events and the deposit. The goal: under 2 s of wall time.
* release: a 3-stage chain (``--width`` works per stage, each stage waiting for every
  work of the earlier ones) with a resolver in its own process (as ``workflow server``
  runs it) and this process as a no-op worker: for each work of stages 2 and 3, the time
  from the previous stage's last ``Succeeded`` to its release (``Requeued``), both times
  as written in the events (one machine, one clock). The goal: p99 under 100 ms.

Usage: ``python benchmarks/configs.py [--width N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import workflow
from workflow.core import configs as cfg
from workflow.core import events as ev
from workflow.server import EmbeddedNats, prepare_log

BIG = """\
name: big
steps:
  - name: grid
    matrix:
      x: {range: 100}
      y: {range: 100}
    work: {pipeline: grid, parameters: {x: "${{ matrix.x }}", y: "${{ matrix.y }}"}}
"""

CHAIN = """\
name: chain
matrix:
  i: {range: WIDTH}
steps:
  - {name: one, stage: 1, work: {pipeline: chain, parameters: {i: "${{ matrix.i }}"}}}
  - {name: two, stage: 2, work: {pipeline: chain, parameters: {i: "${{ matrix.i }}"}}}
  - {name: three, stage: 3, work: {pipeline: chain, parameters: {i: "${{ matrix.i }}"}}}
"""

RESOLVER = (
    "import asyncio, logging, sys\n"
    "logging.basicConfig(level=logging.INFO, format=\"%(asctime)s %(message)s\")\n"
    "from workflow.followers.resolver import run_resolver\n"
    "from workflow.log.eventloop import run\n"
    "run(run_resolver(sys.argv[1], asyncio.Event()))\n"
)


async def deploy_big(url: str) -> dict[str, float]:
    async with workflow.connect(url) as client:
        await client.deposit([])  # warm: the connection is open, the stream known
        start = time.perf_counter()
        config = cfg.parse(BIG, "big.yaml")
        plan = cfg.plan(config, "01" + "0" * 24, time.time())
        planned = time.perf_counter() - start
        assert len(plan.works) == 10_000
        start = time.perf_counter()
        deployment = await client.deploy_config(BIG, file="big.yaml")
        total = time.perf_counter() - start
        assert deployment.started is not None and deployment.started.works == 10_000
        [last] = [p.work.id for p in deployment.plan.works[-1:]] if deployment.plan else [""]
        assert await client.head(last) is not None
    return {"parse_and_plan_s": planned, "deploy_s": total}


async def release_latency(url: str, width: int, tmp: str) -> list[float]:
    log_path = Path(tmp) / "resolver.log"
    with open(log_path, "w") as log:
        resolver = subprocess.Popen([sys.executable, "-c", RESOLVER, url], stderr=log)
    try:
        while "resolver live" not in log_path.read_text():
            assert resolver.poll() is None, f"the resolver died: {log_path.read_text()}"
            await asyncio.sleep(0.05)
        async with workflow.connect(url) as client:
            deployment = await client.deploy_config(CHAIN.replace("WIDTH", str(width)))
            assert deployment.plan is not None
            stages = [[p.work.id for p in deployment.plan.of_step(step)] for step in ("one", "two", "three")]
            last_success: list[float] = []
            for stage in stages:
                done = 0
                while done < len(stage):
                    works = await client.withdraw_many("chain", 256)
                    if not works:
                        await asyncio.sleep(0.001)
                        continue
                    for work in works:
                        await client.succeed(work, {"ok": True})
                    done += len(works)
                heads = await asyncio.gather(*(client.head(work_id) for work_id in stage))
                last_success.append(max(head.event.time for head in heads if head is not None))
            delays = []
            for index, stage in enumerate(stages[1:]):
                for work_id in stage:
                    released = next(e for e in await client.history(work_id) if isinstance(e, ev.Requeued))
                    delays.append(released.time - last_success[index])
                print(f"stage {index + 2}: min {min(delays[-len(stage):]) * 1000:.1f} ms "
                      f"max {max(delays[-len(stage):]) * 1000:.1f} ms")
            return delays
    finally:
        resolver.terminate()
        resolver.wait(15)


async def main(width: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(tmp, port=-1) as server:
        await prepare_log(server.url)
        deployed = await deploy_big(server.url)
        print(f"deploy 10,000 works (100 x 100): parse+plan {deployed['parse_and_plan_s']:.2f} s, "
              f"deploy (parse, plan, events, deposit) {deployed['deploy_s']:.2f} s")
        delays = sorted(await release_latency(server.url, width, tmp))
        p50 = statistics.median(delays) * 1000
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000
        print(f"release after the previous stage's last success ({len(delays)} works, 3 stages of {width}): "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {delays[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=100, help="works per stage of the release chain")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.width))
