"""``workflow tui``: pipelines, their works, and the history of one work, live.

Left, every pipeline with its counts (from the results service); right, the works of the
highlighted pipeline, newest first, optionally narrowed to one status; below, the
timeline of the highlighted work read from the log itself. It refreshes every couple of
seconds; ``c`` cancels the highlighted work. All NATS traffic runs in textual workers
(``@work``), so the screen never waits on the network.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Static

import workflow
from workflow.core.display import describe, when
from workflow.core.errors import WorkflowError
from workflow.core.status import FINISHED, LOGGED

STATUS_FILTERS: tuple[str | None, ...] = (None, *LOGGED)
PIPELINE_COLUMNS = ("pipeline", "total", *LOGGED)
WORK_COLUMNS = ("id", "status", "attempt", "priority", "site", "created (UTC)", "stopped (UTC)")
HISTORY_COLUMNS = ("seq", "time (UTC)", "event", "what")


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

    async def on_mount(self) -> None:
        for table_id, columns, title in (
            ("#pipelines", PIPELINE_COLUMNS, "pipelines"),
            ("#works", WORK_COLUMNS, "works"),
            ("#history", HISTORY_COLUMNS, "history"),
        ):
            table = self.query_one(table_id, DataTable)
            table.add_columns(*columns)
            table.border_title = title
        try:
            self.client = await workflow.connect(**self.connect_options).open()
        except WorkflowError as error:
            self.exit(return_code=3, message=f"error: {error}")
            return
        self.sub_title = self.client.url
        self.set_interval(self.refresh_seconds, self.action_refresh)
        self.action_refresh()

    async def on_unmount(self) -> None:
        if self.client is not None:
            await self.client.close()

    # -- data -------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.load_pipelines()
        self.load_works()
        if self.work_id is not None:
            self.load_history(self.work_id)

    @work(exclusive=True, group="pipelines")
    async def load_pipelines(self) -> None:
        try:
            counts = await self.client.results.pipelines()  # type: ignore[union-attr]
        except WorkflowError as error:
            self.show_status(f"results service: {error}")
            return
        rows = [(name, *(str(c.get(k, 0)) for k in PIPELINE_COLUMNS[1:])) for name, c in sorted(counts.items())]
        self.fill(self.query_one("#pipelines", DataTable), rows, key=lambda row: row[0])
        if self.pipeline is None and rows:
            self.pipeline = rows[0][0]
            self.load_works()
        total = sum(c.get("total", 0) for c in counts.values())
        self.show_status(f"{len(counts)} pipelines, {total} works · filter: {self.status_filter or 'all'}")

    @work(exclusive=True, group="works")
    async def load_works(self) -> None:
        if self.pipeline is None:
            return
        try:
            works = await self.client.results.query(  # type: ignore[union-attr]
                pipeline=self.pipeline, status=self.status_filter, limit=500,
            )
        except WorkflowError as error:
            self.show_status(f"results service: {error}")
            return
        rows = [
            (w.id, w.status, str(w.attempt), str(w.priority), w.site, when(w.creation), when(w.stop))
            for w in works
        ]
        table = self.query_one("#works", DataTable)
        table.border_title = f"works of {self.pipeline}" + (f" ({self.status_filter})" if self.status_filter else "")
        self.fill(table, rows, key=lambda row: row[0])

    @work(exclusive=True, group="history")
    async def load_history(self, work_id: str) -> None:
        try:
            records = await self.client.history_records(work_id)  # type: ignore[union-attr]
        except WorkflowError as error:
            self.show_status(str(error))
            return
        rows = [(str(r.seq), when(r.event.time), type(r.event).__name__, describe(r.event)) for r in records]
        table = self.query_one("#history", DataTable)
        table.border_title = f"history of {work_id}"
        self.fill(table, rows, key=lambda row: row[0])

    @staticmethod
    def fill(table: DataTable, rows: list[tuple[str, ...]], key) -> None:
        """Replace a table's rows, keeping the cursor on the same row when it still exists."""
        current = None
        if table.row_count and table.cursor_row < table.row_count:
            current = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
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
        work_id = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        status = table.get_row(work_id)[1]
        if status in FINISHED:
            self.notify(f"{work_id} has already finished ({status})", severity="warning")
            return
        self.cancel_work(work_id)

    @work(group="cancel")
    async def cancel_work(self, work_id: str) -> None:
        try:
            await self.client.cancel(work_id, reason="cancelled from the TUI")  # type: ignore[union-attr]
        except WorkflowError as error:
            self.notify(str(error), severity="error")
            return
        self.notify(f"cancelled {work_id}")
        self.action_refresh()
