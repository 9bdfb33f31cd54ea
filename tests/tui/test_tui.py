"""The TUI driven by textual's pilot, against a real server, projector and results service."""

from __future__ import annotations

from textual.widgets import DataTable

from conftest import eventually
from workflow import Work
from workflow.tui import WorkflowApp
from workflow.tui.app import STATUS_FILTERS


def rows(app: WorkflowApp, table_id: str) -> list[list[str]]:
    table = app.query_one(table_id, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_the_tui_shows_pipelines_works_and_the_history_of_the_highlighted_work(client, results_service, nats_url):
    [done] = await client.deposit(Work(pipeline="alpha"))
    work = await client.withdraw("alpha")
    await client.succeed(work, {"sum": 3})
    queued = await client.deposit([Work(pipeline="alpha"), Work(pipeline="beta", priority=5)])
    await client.results.count(fresh=True)

    app = WorkflowApp({"url": nats_url}, refresh_seconds=0.3)
    async with app.run_test(size=(160, 50)) as pilot:
        async def pipelines_shown():
            await pilot.pause()
            return rows(app, "#pipelines")

        table = await eventually(pipelines_shown)
        assert ["alpha", "2", "1", "0", "1", "0", "0"] in table and ["beta", "1", "1", "0", "0", "0", "0"] in table

        async def alpha_works():
            await pilot.pause()
            return {row[0]: row[1] for row in rows(app, "#works")} if app.pipeline == "alpha" else None

        assert await eventually(alpha_works) == {done: "success", queued[0]: "queued"}

        app.query_one("#works", DataTable).focus()
        target = app.query_one("#works", DataTable).get_row_index(done)
        app.query_one("#works", DataTable).move_cursor(row=target)

        async def history_shown():
            await pilot.pause()
            return [row[2] for row in rows(app, "#history")] if app.work_id == done else None

        assert await eventually(history_shown) == ["Deposited", "Started", "Succeeded"]


async def test_the_tui_cancels_the_highlighted_work_and_filters_by_status(client, results_service, nats_url):
    [work_id] = await client.deposit(Work(pipeline="alpha"))
    await client.results.count(fresh=True)
    app = WorkflowApp({"url": nats_url}, refresh_seconds=0.3)
    async with app.run_test(size=(160, 50)) as pilot:
        async def shown():
            await pilot.pause()
            return rows(app, "#works")

        await eventually(shown)
        app.query_one("#works", DataTable).focus()
        await pilot.press("c")

        async def cancelled():
            return (await client.get(work_id)).status == "cancelled"

        await eventually(cancelled)
        for _ in range(STATUS_FILTERS.index("cancelled")):  # all → queued → … → cancelled
            await pilot.press("s")
        assert app.status_filter == "cancelled"

        async def only_cancelled():
            await pilot.pause()
            table = rows(app, "#works")
            return table if table and all(row[1] == "cancelled" for row in table) else None

        assert [row[0] for row in await eventually(only_cancelled)] == [work_id]


async def test_the_tui_exits_with_a_clear_message_when_no_server_answers():
    app = WorkflowApp({"url": "nats://127.0.0.1:1"})
    async with app.run_test() as pilot:
        await pilot.pause()
    assert app.return_code == 3


def test_tui_web_serves_the_ui_to_a_browser(tmp_path):
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "workflow.cli", "tui", "--web", "--port", str(port), "--nats", "nats://127.0.0.1:1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = urllib.request.urlopen(f"http://localhost:{port}/", timeout=2).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        assert "textual.js" in page and "<html" in page
    finally:
        server.terminate()
        server.wait(10)
