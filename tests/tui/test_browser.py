"""``workflow tui --web`` in a real browser: Debian's chromium, headless, driven over the
Chrome DevTools protocol (aiohttp's websocket client; no browser download of its own).

The page is a terminal drawn by xterm.js on a canvas (WebGL or 2D), so its text is not in
the DOM. The test checks three things instead: the terminal element is on the page with a
drawn canvas; the terminal output the page received over its websocket (the frames, read
through the DevTools ``Network`` domain, escape sequences removed) holds the dashboard
with the pipelines' names; and a screenshot is kept (``tui-browser.png`` in the test's tmp
dir, copied into ``$WORKFLOW_SCREENSHOT_DIR`` when set) for a person to look at.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from conftest import eventually
from workflow import Work

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,800", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
)
ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\x1b\][^\x07]*\x07")

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DevTools:
    """The smallest Chrome DevTools protocol client: commands, and the events seen so far."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self.ids)
        await self.ws.send_json({"id": command_id, "method": method, "params": params})
        while True:
            message = json.loads((await self.ws.receive(timeout=30)).data)
            if message.get("id") == command_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    async def pump(self, seconds: float = 0.2) -> None:
        """Collect the events that arrive within ``seconds``."""
        try:
            while True:
                message = await self.ws.receive(timeout=seconds)
                self.events.append(json.loads(message.data))
        except TimeoutError:
            pass

    def terminal_output(self) -> str:
        """The text of every websocket frame the page received, escape sequences removed."""
        chunks = []
        for event in self.events:
            if event.get("method") == "Network.webSocketFrameReceived":
                frame = event["params"]["response"]
                data = frame["payloadData"]
                text = base64.b64decode(data).decode("utf-8", "replace") if frame["opcode"] == 2 else data
                chunks.append(ANSI.sub("", text))
        return "".join(chunks)


async def devtools_port(profile: Path, browser: subprocess.Popen[bytes]) -> int:
    async def written() -> int | None:
        assert browser.poll() is None, "chromium exited"
        active = profile / "DevToolsActivePort"
        return int(active.read_text().split()[0]) if active.exists() and active.read_text().strip() else None

    return await eventually(written, timeout=30)


async def served(url: str, server: subprocess.Popen[bytes], session: aiohttp.ClientSession) -> bool:
    assert server.poll() is None, "workflow tui --web exited"
    try:
        async with session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_the_dashboard_renders_in_a_real_browser(client, results_service, nats_url, tmp_path):
    assert CHROMIUM is not None, "chromium is not installed (apt-get install chromium)"  # before starting anything
    await client.deposit([Work(pipeline="alpha-browser"), Work(pipeline="beta-browser", priority=5)])
    await client.results.count(fresh=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [sys.executable, "-m", "workflow.cli", "tui", "--web", "--host", "127.0.0.1", "--port", str(port),
         "--nats", nats_url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    profile = tmp_path / "chromium-profile"
    browser = None
    try:
        browser = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: served(url, server, session), timeout=30)
            debug = await devtools_port(profile, browser)
            async with session.get(f"http://127.0.0.1:{debug}/json/list") as response:
                [page] = [t for t in await response.json() if t["type"] == "page"][:1]
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                await check_the_page(DevTools(ws), url, tmp_path)
    finally:
        server.terminate()
        if browser is not None:
            browser.kill()
            browser.wait(10)
        server.wait(10)


async def check_the_page(tools: DevTools, url: str, tmp_path: Path) -> None:
    await tools.send("Network.enable")
    await tools.send("Page.enable")
    await tools.send("Page.navigate", url=url)

    async def dashboard_received() -> bool:
        await tools.pump()
        output = tools.terminal_output()
        return all(text in output for text in ("pipelines", "alpha-browser", "beta-browser", "buckets", "live"))

    await eventually(dashboard_received, timeout=30)
    drawn = await tools.send("Runtime.evaluate", returnByValue=True, expression=(
        "(() => { const c = document.querySelector('.textual-terminal .xterm-screen canvas');"
        " return c ? [c.width, c.height] : null })()"))
    width, height = drawn["result"]["value"]
    assert width > 600 and height > 400

    async def painted() -> bytes | None:  # xterm.js paints the last frame a moment after it arrives
        shot = base64.b64decode((await tools.send("Page.captureScreenshot", format="png"))["data"])
        return shot if len(shot) > 20_000 else None  # a blank page compresses to a few kB

    png = await eventually(painted, timeout=30, interval=0.5)
    assert png.startswith(b"\x89PNG")
    (tmp_path / "tui-browser.png").write_bytes(png)
    keep = os.environ.get("WORKFLOW_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "tui-browser.png").write_bytes(png)
