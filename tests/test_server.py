"""`workflow server` and the embedded nats-server: start, serve, stop, leave no orphan."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import workflow
from workflow import Work


def start_server(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "workflow.cli", "server", "--port", "-1", "--data-dir", str(tmp_path / "data"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"workflow server ready on (nats://\S+)", line)
        if match:
            return process, match.group(1)
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


def nats_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "nats-server"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def wait_dead(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


async def test_the_server_serves_deposits_and_stops_its_nats_server_on_sigterm(tmp_path):
    process, url = start_server(tmp_path)
    try:
        [child] = nats_children(process.pid)
        async with workflow.connect(url) as client:
            [work_id] = await client.deposit(Work(pipeline="sample-pipeline"))
            assert (await client.get(work_id)).status == "queued"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert wait_dead(child), "nats-server outlived workflow server"
    finally:
        process.kill()


async def test_a_killed_server_leaves_no_orphan_and_the_log_survives_a_restart(tmp_path):
    process, url = start_server(tmp_path)
    [child] = nats_children(process.pid)
    async with workflow.connect(url) as client:
        [work_id] = await client.deposit(Work(pipeline="sample-pipeline", parameters={"a": 1}))
    process.kill()
    process.wait()
    assert wait_dead(child), "nats-server was orphaned by a SIGKILLed workflow server"
    process, url = start_server(tmp_path)
    try:
        async with workflow.connect(url) as client:
            work = await client.get(work_id)
            assert work.parameters == {"a": 1} and work.status == "queued"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_the_server_reports_a_busy_port_clearly(tmp_path, nats_server):
    result = subprocess.run(
        [sys.executable, "-m", "workflow.cli", "server", "--port", str(nats_server.port),
         "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "nats-server exited" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["deposit", "p"], ["show", "X"], ["history", "X"], ["cancel", "X"]])
def test_every_command_without_a_server_says_so_in_one_line(command):
    result = subprocess.run(
        [sys.executable, "-m", "workflow.cli", *command, "--nats", "nats://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3
    assert "cannot reach NATS at nats://127.0.0.1:1" in result.stderr
    assert "workflow server" in result.stderr and "Traceback" not in result.stderr
