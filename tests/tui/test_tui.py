"""The TUI driven by textual's pilot, against a real server, projector and results service.

The app's safety-net timer is set to a minute, so whatever changes on screen here without
a key press came through the live watch of the log.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text
from textual.widgets import DataTable, Input, Sparkline, Static
from textual.widgets.data_table import ColumnKey

from conftest import eventually
from workflow import Work
from workflow.tui import WorkflowApp
from workflow.tui.dashboard import DashboardScreen
from workflow.tui.detail import WorkScreen
from workflow.tui.dialogs import CancelScreen, HelpScreen, PriorityScreen
from workflow.tui.feed import EventsScreen
from workflow.tui.works import WorksScreen

SMALL, LARGE = (80, 24), (120, 32)


def app_for(nats_url: str, **options) -> WorkflowApp:
    return WorkflowApp({"url": nats_url}, refresh_seconds=60, **options)


def rows(app: WorkflowApp, table_id: str) -> list[list[str]]:
    table = app.screen.query_one(table_id, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(app: WorkflowApp, static_id: str) -> str:
    console = Console(width=100, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(app.screen.query_one(static_id, Static).content)
    return console.export_text()


async def until(pilot, check, timeout: float = 20.0):
    async def probe():
        await pilot.pause()
        return check()

    return await eventually(probe, timeout)


async def test_the_dashboard_counts_change_live_when_works_finish(client, results_service, nats_url):
    await client.deposit([Work(pipeline="alpha"), Work(pipeline="alpha"), Work(pipeline="beta", priority=5)])
    app = app_for(nats_url)
    async with app.run_test(size=SMALL) as pilot:
        assert isinstance(app.screen, DashboardScreen)
        assert await until(pilot, lambda: ["alpha", "2", "0", "2", "0", "0", "0", "0"] in rows(app, "#pipelines"))
        assert await until(pilot, lambda: ["beta", "local", "5", "1", "0", "0"] in rows(app, "#buckets"))
        assert "live" in app.sub_title

        work = await client.withdraw("alpha", timeout=10)
        assert await until(pilot, lambda: ["alpha", "2", "0", "1", "1", "0", "0", "0"] in rows(app, "#pipelines"))
        await client.succeed(work, {"sum": 3})
        assert await until(pilot, lambda: ["alpha", "2", "0", "1", "0", "1", "0", "0"] in rows(app, "#pipelines"))
        sparkline = app.screen.query_one("#throughput", Sparkline)
        assert await until(pilot, lambda: sparkline.data is not None and sum(sparkline.data) == 1)
        assert ["alpha", "local", "3", "1", "0", "0"] in rows(app, "#buckets")


async def test_search_narrows_the_works_and_enter_on_a_pipeline_opens_them(client, results_service, nats_url):
    ids = await client.deposit(
        [Work(pipeline="alpha", user="ann", tags=["x"], event=[123], site="chime")]
        + [Work(pipeline="alpha", user="bob") for _ in range(3)] + [Work(pipeline="beta", user="ann")]
    )
    app = app_for(nats_url)
    async with app.run_test(size=LARGE) as pilot:
        assert await until(pilot, lambda: len(rows(app, "#pipelines")) == 2)
        await pilot.press("enter")  # the first pipeline: alpha
        assert isinstance(app.screen, WorksScreen)
        assert await until(pilot, lambda: len(rows(app, "#works")) == 4)
        await pilot.press("slash")
        search = app.screen.query_one("#search", Input)
        assert search.has_focus
        assert search.value == "pipeline:alpha"  # the search that opened the view, replaced by what is typed
        await pilot.press(*"user:ann tag:x event:123 site:chime", "enter")
        assert await until(pilot, lambda: [row[0] for row in rows(app, "#works")] == [ids[0]])
        assert app.screen.search.filters()["pipeline"] is None

        # A second search in the same view, by id prefix. Ids made in the same millisecond
        # differ only in their last characters (monotonic ULIDs), so the prefix is the
        # shortest one no other work shares (a fixed cut once matched two works: the
        # "sometimes no row" of an earlier version of this test).
        prefix = next(ids[4][:n] for n in range(1, 27) if not any(i.startswith(ids[4][:n]) for i in ids[:4]))
        await pilot.press("slash")  # from the table (a submitted search hands focus back to it)
        assert await until(pilot, lambda: search.has_focus)  # typed into the table, `e` would open the feed
        await pilot.press(*f"user:ann id:{prefix}", "enter")  # typed as a person would: no clearing by hand
        assert await until(pilot, lambda: [row[0] for row in rows(app, "#works")] == [ids[4]])
        assert search.value == f"user:ann id:{prefix}"


async def test_paging_shows_the_next_page_and_sorting_reorders(client, results_service, nats_url):
    await client.deposit([Work(pipeline="alpha", priority=1 + i % 5) for i in range(25)])
    newest_first = [w.id for w in await client.results.query(limit=25, fresh=True)]
    app = app_for(nats_url, page_size=10)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("w")
        first = await until(pilot, lambda: [row[0] for row in rows(app, "#works")] or None)
        assert first == newest_first[:10]
        await pilot.press("n")
        assert await until(pilot, lambda: [row[0] for row in rows(app, "#works")] == newest_first[10:20])
        await pilot.press("n", "n")  # the last page holds the last five; no page after it
        assert await until(pilot, lambda: [row[0] for row in rows(app, "#works")] == newest_first[20:])
        assert "21-25 of 25" in text_of(app, "StatusLine")
        await pilot.press("b", "b", "b")
        assert await until(pilot, lambda: [row[0] for row in rows(app, "#works")] == first)

        table = app.screen.query_one("#works", DataTable)
        table.post_message(DataTable.HeaderSelected(table, ColumnKey("priority"), 3, Text("pri")))  # a click on "pri"
        assert await until(pilot, lambda: [row[3] for row in rows(app, "#works")] == ["1"] * 5 + ["2"] * 5)
        await pilot.press("O")
        assert await until(pilot, lambda: [row[3] for row in rows(app, "#works")] == ["5"] * 5 + ["4"] * 5)


async def test_the_detail_of_a_work_shows_its_parameters_results_and_history(client, results_service, nats_url):
    [ok_id, bad_id] = await client.deposit([
        Work(pipeline="alpha", parameters={"a": 1, "b": 2}, retries=0),
        Work(pipeline="alpha", parameters={"depth": 7}, retries=0),
    ])
    ok = await client.withdraw("alpha", timeout=10)
    await client.succeed(ok, {"sum": 3}, products=["out.h5"], plots=["snr.png"])
    bad = await client.withdraw("alpha", timeout=10)
    await client.fail(bad, "error", "ZeroDivisionError: division by zero",
                      "Traceback (most recent call last):\n  File \"x.py\", line 1\nZeroDivisionError", retry=False)
    app = app_for(nats_url)
    async with app.run_test(size=LARGE) as pilot:
        await pilot.press("w")
        await until(pilot, lambda: len(rows(app, "#works")) == 2)
        table = app.screen.query_one("#works", DataTable)
        table.move_cursor(row=table.get_row_index(ok_id))
        await pilot.press("enter")
        assert isinstance(app.screen, WorkScreen)
        assert await until(pilot, lambda: app.screen.work is not None)
        assert '"sum": 3' in text_of(app, "#results") and '"b": 2' in text_of(app, "#parameters")
        assert "out.h5" in text_of(app, "#products") and "snr.png" in text_of(app, "#plots")
        timeline = text_of(app, "#timeline")
        assert all(name in timeline for name in ("Deposited", "Started", "Succeeded"))
        assert ok_id in text_of(app, "#fields") and "success" in text_of(app, "#fields")

        await pilot.press("escape")
        assert isinstance(app.screen, WorksScreen)
        table.move_cursor(row=table.get_row_index(bad_id))
        await pilot.press("enter")
        assert await until(pilot, lambda: isinstance(app.screen, WorkScreen) and app.screen.work is not None)
        timeline = text_of(app, "#timeline")
        assert "Failed" in timeline and "ZeroDivisionError" in timeline and "Traceback" in timeline
        assert '"depth": 7' in text_of(app, "#parameters")


def told(app: WorkflowApp) -> list[str]:
    """The messages the app shows the operator from now on (its notifications), in order:
    a list that fills as they come."""
    said: list[str] = []
    notify = app.notify

    def recording(message, *args, **kwargs):
        said.append(str(message))
        return notify(message, *args, **kwargs)

    app.notify = recording  # type: ignore[method-assign]
    return said


async def _choose(pilot, app, work_id: str) -> None:
    table = app.screen.query_one("#works", DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(work_id))
    await pilot.pause()


async def test_cancel_retry_and_priority_act_on_the_log_after_a_confirmation(client, results_service, nats_url):
    to_cancel, to_move = await client.deposit([Work(pipeline="alpha"), Work(pipeline="alpha", priority=2)])
    app = app_for(nats_url)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("w")
        await until(pilot, lambda: len(rows(app, "#works")) == 2)
        status = {}

        def statuses():
            status.update({row[0]: row[1] for row in rows(app, "#works")})
            return status

        said = told(app)
        await _choose(pilot, app, to_cancel)
        await pilot.press("c")
        assert isinstance(app.screen, CancelScreen)
        await pilot.press(*"oops", "escape")  # changed my mind: nothing happens
        assert isinstance(app.screen, WorksScreen)
        await pilot.press("c")
        assert await until(pilot, lambda: app.screen.query_one("#reason", Input).has_focus)
        await pilot.press(*"wrong input", "enter")  # the reason, asked for as `workflow cancel --reason` does
        assert await until(pilot, lambda: statuses()[to_cancel] == "cancelled")
        # one cancel, the one confirmed, with its reason: a cancel after the escape would show here
        [_deposited, cancelled] = await client.history(to_cancel)
        assert type(cancelled).__name__ == "Cancelled" and cancelled.reason == "wrong input"
        assert said == [f"cancelled {to_cancel}"]

        await _choose(pilot, app, to_cancel)
        await pilot.press("R", "y")
        assert await until(pilot, lambda: statuses()[to_cancel] == "queued")
        assert [type(e).__name__ for e in await client.history(to_cancel)] == ["Deposited", "Cancelled", "Requeued"]

        await _choose(pilot, app, to_move)
        await pilot.press("p")
        assert isinstance(app.screen, PriorityScreen)
        await pilot.press("backspace", "5", "enter", "y")
        assert await until(pilot, lambda: [r[3] for r in rows(app, "#works") if r[0] == to_move] == ["5"])
        assert (await client.get(to_move)).priority == 5
        assert len(await client.history(to_move)) == 2

        await _choose(pilot, app, to_move)
        said.clear()
        await pilot.press("R")  # a queued work is not retried: said, no dialog
        assert await until(pilot, lambda: said == [f"only a failed or cancelled work is retried; {to_move} is queued"])
        assert isinstance(app.screen, WorksScreen)
        assert len(await client.history(to_move)) == 2  # nothing recorded


async def test_the_event_feed_shows_new_events_as_they_happen(client, results_service, nats_url):
    app = app_for(nats_url)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: "live" in app.sub_title)
        await pilot.press("e")
        assert isinstance(app.screen, EventsScreen)
        [a] = await client.deposit(Work(pipeline="alpha"))
        [b] = await client.deposit(Work(pipeline="beta"))
        assert await until(pilot, lambda: [row[2] for row in rows(app, "#events")] == [b, a])
        assert "from then on" in app.screen.query_one("#events", DataTable).border_title
        await pilot.press("f", *"beta", "enter")
        assert await until(pilot, lambda: [row[1] for row in rows(app, "#events")] == ["beta"])
        assert text_of(app, "StatusLine").startswith("1 event shown (of 2 received)")
        await pilot.press("enter")
        assert await until(pilot, lambda: isinstance(app.screen, WorkScreen) and app.screen.work_id == b)


async def test_the_event_feed_says_it_shows_events_from_now_on(client, results_service, nats_url):
    await client.deposit(Work(pipeline="alpha"))  # before the app: not in the feed
    app = app_for(nats_url)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: "live" in app.sub_title)
        await pilot.press("e")
        table = app.screen.query_one("#events", DataTable)
        assert await until(pilot, lambda: "since" in str(table.border_title))
        assert "from then on" in str(table.border_title) and rows(app, "#events") == []


async def test_w_from_the_event_feed_opens_the_works_list(client, results_service, nats_url):
    [a] = await client.deposit(Work(pipeline="alpha"))
    app = app_for(nats_url)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: "live" in app.sub_title)
        await pilot.press("e")
        await client.deposit(Work(pipeline="beta"))
        assert await until(pilot, lambda: len(rows(app, "#events")) == 1)
        await pilot.press("slash")  # the works search, not the feed's filter (that is `f`)
        assert isinstance(app.screen, WorksScreen)
        await pilot.press("escape", "e", "f", *"alpha", "enter")  # a filter typed and applied in the feed
        assert isinstance(app.screen, EventsScreen)
        await pilot.press("w")
        assert isinstance(app.screen, WorksScreen)
        assert await until(pilot, lambda: a in [row[0] for row in rows(app, "#works")])


async def test_help_lists_the_keys_of_the_view(client, results_service, nats_url):
    app = app_for(nats_url)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("w", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert {"Search", "Next page", "Cancel", "Retry", "Priority", "Quit"} <= {what for _, what in app.screen.keys}
        assert "pipeline:alpha" in str(app.screen.query_one("#syntax", Static).content)
        await pilot.press("escape")
        assert isinstance(app.screen, WorksScreen)


async def test_help_in_the_event_feed_shows_its_own_keys_and_filter(client, results_service, nats_url):
    app = app_for(nats_url)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("e", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = {what for _, what in app.screen.keys}
        assert "Filter" in keys and "Next page" not in keys and "Search works" in keys
        syntax = str(app.screen.query_one("#syntax", Static).content)
        assert "pipeline:alpha,beta" in syntax and "status:" not in syntax  # the feed filters by pipeline and id only
        await pilot.press("escape")
        assert isinstance(app.screen, EventsScreen)


async def test_slash_on_the_dashboard_opens_the_works_search_with_the_cursor_in_it(client, results_service, nats_url):
    ids = await client.deposit([Work(pipeline="alpha", user="ann"), Work(pipeline="beta", user="bob")])
    app = app_for(nats_url)
    async with app.run_test(size=SMALL) as pilot:
        assert await until(pilot, lambda: len(rows(app, "#pipelines")) == 2)
        assert await until(pilot, lambda: text_of(app, "StatusLine").startswith("2 pipelines, 2 works"))
        await pilot.press("slash", *"user:bob", "enter")  # nothing typed is lost; enter searches
        assert isinstance(app.screen, WorksScreen)
        search = app.screen.query_one("#search", Input)
        assert search.value == "user:bob" and "pipeline:" in search.placeholder
        assert await until(pilot, lambda: [row[0] for row in rows(app, "#works")] == [ids[1]])

        await pilot.press("enter")  # a work opened, then `/` from its detail: back to the search
        assert await until(pilot, lambda: isinstance(app.screen, WorkScreen) and app.screen.work is not None)
        await pilot.press("slash", *"user:ann", "enter")
        assert isinstance(app.screen, WorksScreen)
        assert await until(pilot, lambda: [row[0] for row in rows(app, "#works")] == [ids[0]])


async def test_one_pipeline_is_singular(client, results_service, nats_url):
    await client.deposit(Work(pipeline="alpha"))
    app = app_for(nats_url)
    async with app.run_test(size=SMALL) as pilot:
        assert await until(pilot, lambda: text_of(app, "StatusLine").startswith("1 pipeline, 1 work ·"))


async def test_an_unreachable_server_is_said_plainly_and_retried():
    app = WorkflowApp({"url": "nats://127.0.0.1:1"}, retry_seconds=0.2)
    async with app.run_test(size=SMALL) as pilot:
        assert await until(pilot, lambda: "UNREACHABLE" in app.sub_title)
        assert app.is_running
        assert "not connected" in text_of(app, "StatusLine")


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


RUN_CONFIG = """\
name: chain
defaults: {pipeline: chain}
steps:
  - name: fetch
    matrix: {event: [1, 2]}
    work: {parameters: {event: "${{ matrix.event }}"}}
  - name: beams
    stage: 2
    matrix: {beam: [0, 1, 2]}
    work: {parameters: {beam: "${{ matrix.beam }}"}}
  - name: refetch
    stage: 2
    if: ${{ pipeline.fetch.status == 'failure' }}
    work: {}
"""


async def test_the_runs_view_shows_each_run_live_and_enter_opens_its_works(client, results_service, nats_url):
    from workflow.tui.runs import RunsScreen

    # Given a configuration's run (no server: its second stage waits) and a work of no run
    run = (await client.deploy_config(RUN_CONFIG, file="chain.yaml")).started.run
    await client.deposit([Work(pipeline="chain")])
    app = app_for(nats_url)
    async with app.run_test(size=LARGE) as pilot:
        await pilot.press("C")
        assert isinstance(app.screen, RunsScreen)
        # Then the run shows with its status, current stage, and its works by status; its steps below
        assert await until(pilot, lambda: rows(app, "#runs") and rows(app, "#runs")[0][:2] == ["chain", run])
        [shown] = rows(app, "#runs")
        assert shown[3:] == ["running", "1", "4 waiting, 2 queued"]
        assert await until(pilot, lambda: rows(app, "#steps") == [
            ["fetch", "1", "success", "queued", "2 queued"],
            ["beams", "2", "success", "waiting", "3 waiting"],
            ["refetch", "2", "${{ pipeline.fetch.status == 'failure' }}", "waiting", "1 waiting"]])
        # When a work of it succeeds, the view follows without a key press
        fetch = await client.withdraw("chain", timeout=10)
        await client.succeed(fetch, {})
        assert fetch.config["step"] == "fetch"
        assert await until(pilot, lambda: rows(app, "#steps")[0][3:] == ["queued", "1 queued, 1 success"])
        assert rows(app, "#runs")[0][5] == "4 waiting, 1 queued, 1 success"
        # enter opens the run's works: the works view searching run:ID, the other work left out
        await pilot.press("enter")
        assert isinstance(app.screen, WorksScreen)
        assert app.screen.query_one("#search", Input).value == f"run:{run}"
        state = await client.config_run("chain", run)
        assert await until(pilot, lambda: sorted(row[0] for row in rows(app, "#works"))
                           == sorted(slot.work.id for slot in state.slots))
        # and ? in the runs view lists its keys and what it shows
        await pilot.press("C", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert {"Works of run", "Config runs"} <= {what for _, what in app.screen.keys}
        assert "run:ID" in str(app.screen.query_one("#syntax", Static).content)
