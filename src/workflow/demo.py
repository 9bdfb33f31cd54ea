"""``make demo``: the seed's story, end to end, with real processes.

1. starts ``workflow server`` (the embedded nats-server, the log, the projector) in a
   temporary directory on a free port;
2. deposits the seed's ``sample-pipeline`` works, ``add(a, b)`` with a few parameters;
3. runs a worker, ``workflow run sample-pipeline --function workflow.examples.add``,
   until every work is done;
4. prints each work's result and the history of one of them, and where that one's plot
   (a small PNG its ``add`` drew) was archived, fetched back with its checksum verified;
5. stops the worker and the server cleanly (SIGTERM), leaving nothing running.

``make demo-configs`` (``python -m workflow.demo configs``) does the same with a pipeline
configuration: it deploys ``examples/localise.yaml``, runs a worker until the run is over,
and prints ``workflow configs ps`` (see docs/howto/configs.md).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import workflow
from workflow.core.display import describe, when
from workflow.core.status import LOGGED

console = Console()
PARAMETERS: list[dict[str, Any]] = [
    {"a": 1, "b": 2}, {"a": 3, "b": 4}, {"a": 10, "b": -3}, {"a": 2.5, "b": 0.5}, {"a": 100, "b": 23},
]


def workflow_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "workflow.cli", *args]


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``workflow server`` on a free port; returns it and its NATS URL."""
    server = subprocess.Popen(
        workflow_command("server", "--port", "-1", "--data-dir", str(data_dir), "--log-level", "warning"),
        stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None  # stdout=PIPE
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line:
            break
        match = re.search(r"workflow server ready on (nats://\S+)", line)
        if match:
            return server, match.group(1)
    server.kill()
    raise SystemExit("workflow server did not start; see the messages above")


def start_worker(url: str, lives: int) -> subprocess.Popen[bytes]:
    """``workflow run sample-pipeline --function workflow.examples.add`` for ``lives`` works."""
    return subprocess.Popen(
        workflow_command("run", "sample-pipeline", "--site", "local", "--function", "workflow.examples.add",
                         "--lives", str(lives), "--sleep", "1"),
        env={**os.environ, "WORKFLOW_NATS_URL": url},
    )


async def deposit(url: str, plots: Path) -> list[str]:
    """The works; the first also draws its sum as a small PNG in ``plots`` (its ``path``),
    which the worker archives into the object store."""
    plots.mkdir(parents=True, exist_ok=True)
    async with workflow.connect(url) as client:
        works = [workflow.Work(pipeline="sample-pipeline", parameters=p, user="demo") for p in PARAMETERS]
        works[0] = workflow.Work(pipeline="sample-pipeline", parameters={**PARAMETERS[0], "plot": str(plots)},
                                 path=str(plots), user="demo")
        return await client.deposit(works)


async def archived_plot(url: str, work_id: str) -> str:
    """Where the first work's plot was archived, fetched back and checked."""
    async with workflow.connect(url) as client:
        [plot] = await client.products.list(work_id)
        with tempfile.TemporaryDirectory() as fetched:
            [path] = await client.products.download(work_id, fetched)
            return (f"{plot.name}, {plot.size or 0:,} bytes, at {plot.uri} (sha256 {(plot.sha256 or '')[:12]}…; "
                    f"fetched back: {path.stat().st_size:,} bytes, verified)")


async def wait_until_done(url: str, ids: list[str], timeout: float = 120) -> list[workflow.Work]:
    async with workflow.connect(url) as client:
        deadline = time.monotonic() + timeout
        while True:
            works = [await client.get(work_id) for work_id in ids]
            if all(w.finished for w in works) or time.monotonic() > deadline:
                return works
            await asyncio.sleep(0.2)


def results_table(works: list[workflow.Work]) -> Table:
    table = Table(title="4. results")
    table.add_column("id", no_wrap=True)
    for column in ("parameters", "status", "attempt", "results"):
        table.add_column(column)
    for work in works:
        table.add_row(work.id, str(work.parameters), work.status, str(work.attempt), str(work.results))
    return table


async def history_table(url: str, work_id: str) -> Table:
    """The work's events as the log holds them."""
    timeline = Table("seq", "time (UTC)", "what", title=f"history of {work_id}")
    async with workflow.connect(url) as client:
        for record in await client.history_records(work_id):
            timeline.add_row(str(record.seq), when(record.event.time), describe(record.event))
    return timeline


async def counts_table(url: str) -> Table:
    """The projector's read model, asked over NATS (waits until it holds every event)."""
    counts = Table("pipeline", "total", *LOGGED, title="the read model (DuckDB projector, asked over NATS)")
    async with workflow.connect(url) as client:
        pipelines = await client.results.pipelines(fresh=True)
    for name, c in pipelines.items():
        counts.add_row(name, *(str(c[k]) for k in ("total", *LOGGED)))
    return counts


def stop(*processes: subprocess.Popen[Any] | None) -> None:
    """SIGTERM each process still running, as a supervisor would; SIGKILL if it lingers."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="workflow-demo-") as tmp:
        console.rule("workflow demo")
        server, url = start_server(Path(tmp) / "data")
        worker = None
        try:
            console.print(f"1. server up: embedded nats-server at [bold]{url}[/], log and projector running")
            ids = asyncio.run(deposit(url, Path(tmp) / "plots"))
            console.print(f"2. deposited {len(ids)} works of [bold]sample-pipeline[/] (add(a, b))")
            worker = start_worker(url, lives=len(ids))
            console.print("3. worker started: workflow run sample-pipeline --function workflow.examples.add")
            works = asyncio.run(wait_until_done(url, ids))
            console.print(results_table(works))
            console.print(asyncio.run(history_table(url, ids[0])))
            console.print(f"   its plot, archived by the worker: {asyncio.run(archived_plot(url, ids[0]))}",
                          highlight=False)
            console.print(asyncio.run(counts_table(url)))
            if not all(w.status == "success" for w in works):
                raise SystemExit("some works did not succeed")
        finally:
            stop(worker, server)
        console.print("5. worker and server stopped cleanly. Try it yourself: see the README's 5-minute tour.")


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "localise.yaml"


async def wait_for_run(url: str, name: str, timeout: float = 120) -> str:
    """The status of the latest run of ``name`` once it is over (or ``running`` at the deadline)."""
    async with workflow.connect(url) as client:
        deadline = time.monotonic() + timeout
        while True:
            status = (await client.config_run(name)).view.status
            if status != "running" or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.5)


def configs_main() -> None:
    """The configuration demo (see the module)."""
    if not EXAMPLE.is_file():
        raise SystemExit(f"{EXAMPLE} not found: run the configuration demo from a checkout (make demo-configs)")
    with tempfile.TemporaryDirectory(prefix="workflow-demo-") as tmp:
        console.rule("workflow configs demo")
        server, url = start_server(Path(tmp) / "data")
        env = {**os.environ, "WORKFLOW_NATS_URL": url}
        worker = None
        try:
            console.print(f"1. server up at [bold]{url}[/]: its resolver releases each stage of a run")
            subprocess.run(workflow_command("configs", "deploy", str(EXAMPLE), "--dry-run"), env=env, check=True)
            subprocess.run(workflow_command("configs", "deploy", str(EXAMPLE)), env=env, check=True)
            worker = subprocess.Popen(workflow_command("run", "localise", "--sleep", "1", "--log-level", "warning"),
                                      env=env)
            console.print("2. deployed; worker started: workflow run localise")
            status = asyncio.run(wait_for_run(url, "localise"))
            subprocess.run(workflow_command("configs", "ps", "localise"), env=env, check=True)
            if status != "success":
                raise SystemExit(f"the run ended {status}")
        finally:
            stop(worker, server)
        console.print("3. worker and server stopped. The format and the commands: docs/howto/configs.md.")


if __name__ == "__main__":
    configs_main() if sys.argv[1:] == ["configs"] else main()
