"""The web UI's test helpers (the test modules wrap them as fixtures): a real ``workflow
server --web-port 0`` process (the embedded nats-server, the projector, the web UI), and
Debian's chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from workflow.core.roles import parse_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
_READY = re.compile(r"workflow server ready on (nats://\S+)")
_WEB = re.compile(r"workflow web UI on (http://\S+?)/? ")


@dataclass
class Served:
    """A running ``workflow server`` with its web UI: where each listens, and how to reach NATS."""

    process: subprocess.Popen[bytes]
    log: Path
    nats_url: str
    web_url: str
    env: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)

    def workflow(self, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a ``workflow`` command against this server (as the operator when it has roles)."""
        return subprocess.run([sys.executable, "-m", "workflow.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=90, check=check, cwd=cwd)

    def deposit(self, pipeline: str, *options: str) -> list[str]:
        out = self.workflow("deposit", pipeline, *options).stdout
        return re.findall(r"\b[0-9A-HJKMNP-TV-Z]{26}\b", out)

    def get(self, path: str, cookie: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.web_url + path, headers={"Cookie": cookie} if cookie else {})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def work(self, work_id: str) -> dict:
        return json.loads(self.workflow("show", work_id, "--json").stdout)


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WORKFLOW_NATS_")}
    return {**env, **extra}


def start_server(tmp_path: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 45.0) -> Served:
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workflow.cli", "server", "--port", "-1", "--data-dir", str(tmp_path / "data"),
             "--web-port", "0", *extra], stdout=out, stderr=subprocess.STDOUT, env=env or _env(), cwd=tmp_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        nats, web = _READY.search(text), _WEB.search(text)
        if nats and web:
            served = Served(process, log, nats.group(1), web.group(1), env=_env(WORKFLOW_NATS_URL=nats.group(1)))
            if served.get("/api/pipelines")[0] in (200, 401):  # the results service answers (401: login first)
                return served
        if process.poll() is not None:
            raise AssertionError(f"workflow server exited {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.1)
    stop(process)
    raise AssertionError(f"workflow server with its web UI not ready within {timeout}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serving(tmp_path: Path) -> Iterator[Served]:
    """The system with its web UI, no login (loopback)."""
    server = start_server(tmp_path)
    try:
        yield server
    finally:
        stop(server.process)


def serving_secured(tmp_path: Path) -> Iterator[Served]:
    """The system with roles (`workflow secure init`) and its web UI's users: operator and viewer."""
    directory = tmp_path / "secure"
    subprocess.run([sys.executable, "-m", "workflow.cli", "secure", "init", str(directory)], check=True,
                   capture_output=True, env=_env(), timeout=60)
    passwords = {role: parse_env((directory / f"{role}.env").read_text())["WORKFLOW_NATS_PASSWORD"]
                 for role in ("operator", "viewer")}
    server = start_server(tmp_path, "--config", str(directory / "nats.conf"))
    server.env.update(WORKFLOW_NATS_USER="operator", WORKFLOW_NATS_PASSWORD=passwords["operator"])
    server.passwords = passwords
    try:
        yield server
    finally:
        stop(server.process)


def launched_chromium() -> Iterator[Any]:
    """Debian's chromium, driven by Playwright (never a browser of Playwright's own)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, width: int = 1280, height: int = 900) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()
