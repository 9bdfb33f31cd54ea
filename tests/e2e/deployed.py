"""Real nats-server processes from the configs in ``deploy/`` (ports moved to free ones, stores
to a temp dir), and the ``workflow`` processes that run against them: what the cluster and
site tests share. Waits have deadlines; nothing sleeps in place of "until"."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats

from workflow.core import events as ev
from workflow.server import nats_server_binary

HERE = Path(__file__).parent
DEPLOY = HERE.parents[1] / "deploy"
_ADDRESS = re.compile(r"127\.0\.0\.1:(\d+)")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def relocate(texts: dict[str, str], store: Path) -> dict[str, str]:
    """The configs with every loopback port moved to a free one (consistently across files)
    and every ``store_dir`` under ``store``."""
    shipped = sorted({int(port) for text in texts.values() for port in _ADDRESS.findall(text)})
    moved = dict(zip(shipped, free_ports(len(shipped)), strict=True))
    out = {}
    for name, text in texts.items():
        text = _ADDRESS.sub(lambda m: f"127.0.0.1:{moved[int(m.group(1))]}", text)
        out[name] = re.sub(r'store_dir: "([^"]+)"', lambda m: f'store_dir: "{store / m.group(1)}"', text)
    return out


class Node:
    """One nats-server from a config file; ``url`` is its client address."""

    def __init__(self, config: Path, log_path: Path):
        self.config, self.log_path = config, log_path
        text = config.read_text()
        self.name = re.search(r"server_name: (\S+)", text).group(1) if "server_name" in text else config.stem
        self.url = "nats://" + re.search(r"^listen: (\S+)", text, re.MULTILINE).group(1)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> Node:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([nats_server_binary(), "-c", str(self.config)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while "Server is ready" not in self.log_path.read_bytes()[offset:].decode(errors="replace"):
            assert self.process.poll() is None, self.log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, f"{self.name} not ready in {timeout}s"
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


async def until(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1,
                explain: Callable[[], str] | None = None) -> Any:
    """Await ``check()`` (sync or async) until truthy (returned), else fail after ``timeout``
    (with what ``explain()`` says: the logs that tell why, when CI is all there is)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            said = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r}){said}")
        await asyncio.sleep(interval)


async def js_api(url: str, subject: str, timeout: float = 2.0) -> dict[str, Any]:
    """One ``$JS.API`` request on a connection of its own (an error dict if unanswered)."""
    try:
        nc = await nats.connect(servers=url.split(","), connect_timeout=1, max_reconnect_attempts=1)
    except Exception as error:
        return {"error": {"description": repr(error)}}
    try:
        return dict(json.loads((await nc.request(f"$JS.API.{subject}", b"", timeout=timeout)).data))
    except Exception as error:
        return {"error": {"description": repr(error)}}
    finally:
        await nc.close()


def log_tails(paths: list[Path], lines: int = 25) -> str:
    """The last ``lines`` of each log, under its name: what a failed wait prints."""
    tails = []
    for path in paths:
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
        tails.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(tails)


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WORKFLOW_NATS_")}
    env.update(WORKFLOW_NATS_URL=url, WORKFLOW_LEASE_SECONDS=os.environ.get("WORKFLOW_LEASE_SECONDS", "1.5"),
               WORKFLOW_RETRY_BACKOFF=os.environ.get("WORKFLOW_RETRY_BACKOFF", "0.1"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return {**env, **extra}


def workflow_process(args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "workflow.cli", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=cwd)


def end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def assert_each_succeeded_once_and_read_model_equals_fold(client: Any, ids: list[str]) -> int:
    """The exactly-once check: one ``Succeeded`` per work in the log, and the results
    service's row of each work equals the fold of its events. Returns how many attempts
    were started again (after a lost lease or a refused outcome)."""
    restarted = 0
    for work_id in ids:
        names = [type(event).__name__ for event in await client.history(work_id)]
        assert names.count("Succeeded") == 1, (work_id, names)
        restarted += names.count("Started") - 1
        assert isinstance((await client.head(work_id)).event, ev.Succeeded)
    for work_id in ids:
        assert await client.results.get(work_id, fresh=True) == await client.get(work_id), work_id
    return restarted
