"""The live event feed: the lifecycle events published since the app connected (from
then on, not the log's past: ``workflow history`` and the works view have that), newest
first, optionally narrowed to some pipelines (``f``: ``pipeline:alpha,beta`` or just
``alpha``, and ``id:01J`` for one work). ``enter`` opens the event's work; ``/`` is the
works search, as everywhere."""

from __future__ import annotations

from itertools import islice
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Input

from workflow.core.display import counted
from workflow.core.errors import ValidationError
from workflow.core.search import Search, parse
from workflow.tui.base import LiveScreen, StatusLine, fill
from workflow.tui.detail import WorkScreen
from workflow.tui.rows import EVENT_COLUMNS, FeedItem, event_rows, short_time
from workflow.tui.source import Source

#: Rows the feed shows (the source keeps more, for a narrower filter).
SHOWN = 300
FILTER_HELP = (
    "pipeline:alpha,beta  (or a bare pipeline name)   id:01J  (a work's id prefix)\n"
    "The feed shows the events published since the app connected, newest first."
)


def matches(item: FeedItem, search: Search) -> bool:
    if search.pipeline and item.pipeline not in search.pipeline:
        return False
    return search.id_prefix is None or item.work_id.startswith(search.id_prefix)


class EventsScreen(LiveScreen):
    """The newest events of the log."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "filter", "Filter"),
        Binding("escape", "leave_filter", "To table", show=False),
    ]
    SYNTAX = ("Filter (f)", FILTER_HELP)

    def __init__(self, source: Source) -> None:
        super().__init__(source)
        self.search = Search()
        self.keys: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="f filter: pipeline:alpha,beta id:01J", id="filter")
        yield DataTable(id="events", cursor_type="row", zebra_stripes=True)
        yield StatusLine("events from now on: waiting for the first…")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#events", DataTable)
        table.add_columns(*EVENT_COLUMNS)
        table.border_title = "events from now on, newest first"
        table.focus()

    async def load(self) -> None:
        newest = (item for item in reversed(self.source.feed) if matches(item, self.search))
        items = list(islice(newest, SHOWN))
        self.keys = [f"{item.work_id}/{id(item)}" for item in items]  # stable while the feed holds it
        table = self.query_one("#events", DataTable)
        fill(table, event_rows(items), self.keys)
        since = self.source.watching_since
        if since is not None:
            table.border_title = f"events since {short_time(since)} UTC (from then on), newest first"
        self.show_status(f"{counted(len(items), 'event')} shown (of {len(self.source.feed):,} received) · "
                         f"{self.search.describe() if self.search.text else 'every pipeline'}")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.search = parse(event.value)
        except ValidationError as error:
            self.show_status(str(error), error=True)
            return
        self.query_one("#events", DataTable).focus()
        self.reload()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one("#events", DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(WorkScreen(self.source, event.row_key.value.split("/")[0]))
