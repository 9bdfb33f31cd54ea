"""``workflow tui``: pipelines, their works, and the history of one work, live.

Left, every pipeline with its counts (from the results service); right, the works of the
highlighted pipeline, newest first, optionally narrowed to one status; below, the
timeline of the highlighted work read from the log itself. It refreshes every couple of
seconds; ``c`` cancels the highlighted work. All NATS traffic runs in textual workers
(``@work``), so the screen never waits on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar, cast

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Footer, Header, Static

import workflow
from workflow.api import Client
from workflow.core.display import describe, when
from workflow.core.errors import WorkflowError
from workflow.core.status import FINISHED, LOGGED
from workflow.core.work import Work
from workflow.log.client import Recorded

STATUS_FILTERS: tuple[str | None, ...] = (None, *LOGGED)
PIPELINE_COLUMNS = ("pipeline", "total", *LOGGED)
WORK_COLUMNS = ("id", "status", "attempt", "priority", "site", "created (UTC)", "stopped (UTC)")
HISTORY_COLUMNS = ("seq", "time (UTC)", "event", "what")

Row = tuple[str, ...]
T = TypeVar("T")


def pipeline_rows(counts: dict[str, dict[str, int]]) -> list[Row]:
    """One row per pipeline, by name: its total and its count in every status."""
    return [(name, *(str(c.get(k, 0)) for k in PIPELINE_COLUMNS[1:])) for name, c in sorted(counts.items())]


def work_rows(works: Iterable[Work]) -> list[Row]:
    return [
        (w.id or "", w.status, str(w.attempt), str(w.priority), w.site, when(w.creation), when(w.stop))
        for w in works
    ]


def history_rows(records: Iterable[Recorded]) -> list[Row]:
    return [(str(r.seq), when(r.event.time), type(r.event).__name__, describe(r.event)) for r in records]


class WorkflowApp(App[int]):
    """The operator's view of a running workflow system."""

    CSS_PATH = "app.tcss"
    TITLE = "workflow"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh", "Refresh"),
        Binding("s", "cycle_status", "Status filter"),
        Binding("c", "cancel_work", "Cancel work"),
    ]

    def __init__(self, connect_options: dict[str, Any] | None = None, refresh_seconds: float = 2.0) -> None:
        super().__init__()
        self.connect_options = connect_options or {}
        self.refresh_seconds = refresh_seconds
        self.client: workflow.Client | None = None
        self.pipeline: str | None = None
        self.work_id: str | None = None
        self.status_filter: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            yield DataTable(id="pipelines", cursor_type="row", zebra_stripes=True)
            yield DataTable(id="works", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="history", cursor_type="row")
        yield Static("connecting…", id="status-line")
        yield Footer()

    @property
    def connected(self) -> workflow.Client:
        """The open client; the loads only run once :meth:`on_mount` has opened it."""
        if self.client is None:
            raise WorkflowError("not connected yet")
        return self.client

    async def on_mount(self) -> None:
        for table_id, columns, title in (
            ("#pipelines", PIPELINE_COLUMNS, "pipelines"),
            ("#works", WORK_COLUMNS, "works"),
            ("#history", HISTORY_COLUMNS, "history"),
        ):
            table = self.query_one(table_id, DataTable)
            table.add_columns(*columns)
            table.border_title = title
        client = workflow.connect(**self.connect_options)
        try:
            await client.open()
        except WorkflowError as error:
            self.exit(return_code=3, message=f"error: {error}")
            return
        self.client = client
        self.sub_title = client.url
        self.set_interval(self.refresh_seconds, self.action_refresh)
        self.action_refresh()

    async def on_unmount(self) -> None:
        """Close the client once the loads are over: textual has cancelled them by now, but a
        load still unsubscribing while the connection drains would fail the app's exit."""
        self.workers.cancel_all()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.workers.wait_for_complete(), 5)
        if self.client is not None:
            await self.client.close()

    # -- data -------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.load_pipelines()
        self.load_works()
        if self.work_id is not None:
            self.load_history(self.work_id)

    async def ask(self, question: Callable[[Client], Awaitable[T]], what: str = "") -> T | None:
        """The answer to ``question`` (asked of the client), or None.

        None when it failed (the error shown in the status line, prefixed by ``what``),
        and when the app stopped meanwhile: a load that ends during shutdown must not
        touch the widgets, which are gone (a cancelled NATS request may still return).
        """
        try:
            answer = await question(self.connected)
        except WorkflowError as error:
            if self.is_running:
                self.show_status(f"{what}{error}")
            return None
        return answer if self.is_running else None

    @work(exclusive=True, group="pipelines")
    async def load_pipelines(self) -> None:
        counts = await self.ask(lambda client: client.results.pipelines(), "results service: ")
        if counts is None:
            return
        rows = pipeline_rows(counts)
        self.fill(self.query_one("#pipelines", DataTable), rows, key=lambda row: row[0])
        if self.pipeline is None and rows:
            self.pipeline = rows[0][0]
            self.load_works()
        total = sum(c.get("total", 0) for c in counts.values())
        self.show_status(f"{len(counts)} pipelines, {total} works · filter: {self.status_filter or 'all'}")

    @work(exclusive=True, group="works")
    async def load_works(self) -> None:
        pipeline, status = self.pipeline, self.status_filter
        if pipeline is None:
            return
        works = await self.ask(
            lambda client: client.results.query(pipeline=pipeline, status=status, limit=500), "results service: "
        )
        if works is None:
            return
        table = self.query_one("#works", DataTable)
        table.border_title = f"works of {pipeline}" + (f" ({status})" if status else "")
        self.fill(table, work_rows(cast(list[Work], works)), key=lambda row: row[0])  # Works: no ``fields`` asked

    @work(exclusive=True, group="history")
    async def load_history(self, work_id: str) -> None:
        records = await self.ask(lambda client: client.history_records(work_id))
        if records is None:
            return
        table = self.query_one("#history", DataTable)
        table.border_title = f"history of {work_id}"
        self.fill(table, history_rows(records), key=lambda row: row[0])

    @staticmethod
    def fill(table: DataTable[Any], rows: Sequence[Row], key: Callable[[Row], str]) -> None:
        """Replace a table's rows, keeping the cursor on the same row when it still exists."""
        current = None
        if table.row_count and table.cursor_row < table.row_count:
            current = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        table.clear()
        for row in rows:
            table.add_row(*row, key=key(row))
        if current is not None:
            try:
                table.move_cursor(row=table.get_row_index(current))
            except Exception:  # the row is gone (filtered out)
                pass

    def show_status(self, text: str) -> None:
        self.query_one("#status-line", Static).update(text)

    # -- interaction ------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if event.data_table.id == "pipelines" and key != self.pipeline:
            self.pipeline = key
            self.load_works()
        elif event.data_table.id == "works" and key != self.work_id:
            self.work_id = key
            self.load_history(key)

    def action_cycle_status(self) -> None:
        index = STATUS_FILTERS.index(self.status_filter)
        self.status_filter = STATUS_FILTERS[(index + 1) % len(STATUS_FILTERS)]
        self.load_works()
        self.show_status(f"filter: {self.status_filter or 'all'}")

    def action_cancel_work(self) -> None:
        table = self.query_one("#works", DataTable)
        if not table.row_count:
            return
        row_key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key
        work_id, status = row_key.value, table.get_row(row_key)[1]
        if work_id is None:  # every row is added with its work's id as key
            return
        if status in FINISHED:
            self.notify(f"{work_id} has already finished ({status})", severity="warning")
            return
        self.cancel_work(work_id)

    @work(group="cancel")
    async def cancel_work(self, work_id: str) -> None:
        try:
            await self.connected.cancel(work_id, reason="cancelled from the TUI")
        except WorkflowError as error:
            self.notify(str(error), severity="error")
            return
        self.notify(f"cancelled {work_id}")
        self.action_refresh()
