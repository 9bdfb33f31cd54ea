"""The live event feed: the newest lifecycle events as they are published, newest first,
optionally narrowed to some pipelines (``/``: ``pipeline:alpha,beta`` or just ``alpha``, and
``id:01J`` for one work). ``enter`` opens the event's work."""

from __future__ import annotations

from itertools import islice
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Input

from workflow.core.errors import ValidationError
from workflow.tui.base import LiveScreen, StatusLine, fill
from workflow.tui.detail import WorkScreen
from workflow.tui.rows import EVENT_COLUMNS, FeedItem, event_rows
from workflow.tui.search import Search, parse
from workflow.tui.source import Source

#: Rows the feed shows (the source keeps more, for a narrower filter).
SHOWN = 300


def matches(item: FeedItem, search: Search) -> bool:
    if search.pipeline and item.pipeline not in search.pipeline:
        return False
    return search.id_prefix is None or item.work_id.startswith(search.id_prefix)


class EventsScreen(LiveScreen):
    """The newest events of the log."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "leave_filter", "To table", show=False),
    ]

    def __init__(self, source: Source) -> None:
        super().__init__(source)
        self.search = Search()
        self.keys: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="/ filter: pipeline:alpha,beta id:01J", id="filter")
        yield DataTable(id="events", cursor_type="row", zebra_stripes=True)
        yield StatusLine("waiting for events…")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#events", DataTable)
        table.add_columns(*EVENT_COLUMNS)
        table.border_title = "events, newest first"
        table.focus()

    async def load(self) -> None:
        newest = (item for item in reversed(self.source.feed) if matches(item, self.search))
        items = list(islice(newest, SHOWN))
        self.keys = [f"{item.work_id}/{id(item)}" for item in items]  # stable while the feed holds it
        fill(self.query_one("#events", DataTable), event_rows(items), self.keys)
        self.show_status(f"{len(items)} events shown (of {len(self.source.feed)} received) · "
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
