"""A NATS server that goes away mid-work: the worker rides out the outage, loses nothing."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import workflow
from workflow import Work
from workflow.server import EmbeddedNats, prepare_log

from test_worker_e2e import names, pids_in, until, worker_env  # noqa: E402  (sibling test module)

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_result_finished_while_the_server_was_down_is_recorded_once_it_is_back(tmp_path: Path):
    port = free_port()
    store = tmp_path / "nats"
    server = EmbeddedNats(store, port=port).start()
    await prepare_log(server.url)
    marker = tmp_path / "running"
    async with workflow.connect(server.url) as client:
        [work_id] = await client.deposit(
            Work(pipeline="outage", function="worker_functions.slow", parameters={"seconds": 3, "marker": str(marker)})
        )
    worker = subprocess.Popen(
        [sys.executable, "-m", "workflow.cli", "run", "outage", "--sleep", "1", "--lives", "1"],
        env=worker_env(server.url), stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    try:
        await until(lambda: pids_in(marker), timeout=30)  # the function is running
        server.kill()  # SIGKILL: the log, the lease and the worker's connection all vanish at once
        await asyncio.sleep(4)  # the function finishes while the server is down
        assert worker.poll() is None, "the worker gave up while the server was away"
        server = EmbeddedNats(store, port=port).start()  # same store, same address
        await until(lambda: worker.poll() is not None, timeout=60)  # --lives 1: it exits once recorded
        assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
        async with workflow.connect(server.url) as client:
            work = await client.get(work_id)
            history = await client.history(work_id)
        assert work.status == "success" and work.results["slept"] == 3
        assert names(history) == ["Deposited", "Started", "Succeeded"], (tmp_path / "worker.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
        server.stop()
