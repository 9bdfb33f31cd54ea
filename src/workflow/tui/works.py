"""The works view: a search box, a sortable table, one page at a time of any number of works.

The results service does the filtering, sorting and paging (``limit``/``offset``), so the
app holds one page, never the whole table. ``/`` searches (see :mod:`workflow.core.search`),
``n``/``b`` page, ``o``/``O`` (or a click on a header) sort, ``enter`` opens a work, ``B``
cancels, requeues or deletes every work the search matches (:mod:`workflow.tui.bulk`).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, cast

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Input

from workflow.core.errors import ValidationError
from workflow.core.search import SEARCH_HINT, Search, parse
from workflow.core.work import Work
from workflow.tui.base import StatusLine, fill, selected_key
from workflow.tui.bulk import BulkActionsScreen
from workflow.tui.detail import WorkScreen
from workflow.tui.rows import Column, work_columns, work_rows
from workflow.tui.source import Source

PAGE_SIZE = 100


class WorksScreen(BulkActionsScreen):
    """Works matching a search, a page at a time."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search"),
        Binding("escape", "leave_search", "To table", show=False),
        Binding("n", "page(1)", "Next page"),
        Binding("b", "page(-1)", "Prev page"),
        Binding("o", "cycle_order", "Sort"),
        Binding("O", "reverse_order", "Reverse", show=False),
    ]

    def __init__(self, source: Source, page_size: int = PAGE_SIZE) -> None:
        super().__init__(source)
        self.page_size = page_size
        self.search = Search()
        self.page = 0
        self.order = "-creation"
        self.total: int | None = None
        self.works: dict[str, Work] = {}
        self.columns: tuple[Column, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder=SEARCH_HINT, id="search")
        yield DataTable(id="works", cursor_type="row", zebra_stripes=True)
        yield StatusLine("")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#search", Input).border_title = "search (/)"
        self._set_columns(self.app.size.width)
        self.query_one("#works", DataTable).focus()

    def on_resize(self, event: events.Resize) -> None:
        if work_columns(event.size.width) != self.columns:
            self._set_columns(event.size.width)
            self.reload()

    def _set_columns(self, width: int) -> None:
        self.columns = work_columns(width)
        table = self.query_one("#works", DataTable)
        table.clear(columns=True)
        for column in self.columns:
            table.add_column(column.label, key=column.field)

    # -- loading ----------------------------------------------------------------------

    async def load(self) -> None:
        search, offset, order = self.search, self.page * self.page_size, self.order
        filters = search.filters()
        works, total = await asyncio.gather(
            self.ask(lambda client: client.results.query(
                **filters, limit=self.page_size, offset=offset, order=order, fresh=True)),
            self.ask(lambda client: client.results.count(**filters, fresh=True)),  # as fresh as the rows
        )
        if works is None or total is None:
            return
        page = cast(list[Work], works)  # Works: no ``fields`` asked
        self.total = total
        self.works = {work.id or "": work for work in page}
        fill(self.query_one("#works", DataTable), work_rows(page, self.columns), list(self.works))
        self._describe(len(page), offset)

    def _describe(self, shown: int, offset: int) -> None:
        table = self.query_one("#works", DataTable)
        table.border_title = f"works: {self.search.describe()}"
        span = f"{offset + 1}-{offset + shown}" if shown else "none"
        pages = max(1, -(-(self.total or 0) // self.page_size))
        self.show_status(f"{span} of {self.total} · page {self.page + 1}/{pages} · sorted by {self.order}")

    # -- searching, paging, sorting ---------------------------------------------------

    def search_for(self, text: str) -> None:
        """Show the works matching ``text`` (the search box's syntax), from the first page."""
        self.query_one("#search", Input).value = text
        self._apply(text)

    def _apply(self, text: str) -> bool:
        try:
            self.search = parse(text)
        except ValidationError as error:
            self.show_status(str(error), error=True)
            return False
        self.page = 0
        self.reload()
        return True

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._apply(event.value):
            self.query_one("#works", DataTable).focus()

    def action_search(self) -> None:
        """The cursor in the box, its text selected: what is typed replaces the last search
        (``enter`` on an empty box shows every work)."""
        box = self.query_one("#search", Input)
        box.focus()
        box.select_all()

    def action_leave_search(self) -> None:
        self.query_one("#works", DataTable).focus()

    def action_page(self, step: int) -> None:
        last = max(0, -(-(self.total or 0) // self.page_size) - 1)
        page = min(max(0, self.page + step), last)
        if page != self.page:
            self.page = page
            self.reload()

    def action_cycle_order(self) -> None:
        orders = [column.order for column in self.columns if column.order]
        current = self.order.removeprefix("-")
        following = orders[(orders.index(current) + 1) % len(orders)] if current in orders else orders[0]
        self._order_by(f"-{following}" if self.order.startswith("-") else following)

    def action_reverse_order(self) -> None:
        self._order_by(self.order[1:] if self.order.startswith("-") else f"-{self.order}")

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = next((c for c in self.columns if c.field == event.column_key.value), None)
        if column is None or column.order is None:
            return
        self._order_by(f"-{column.order}" if self.order == column.order else column.order)

    def _order_by(self, order: str) -> None:
        self.order, self.page = order, 0
        self.reload()

    # -- a work -----------------------------------------------------------------------

    def bulk_search(self) -> Search:
        return self.search

    def selected_work(self) -> Work | None:
        key = selected_key(self.query_one("#works", DataTable))
        return self.works.get(key) if key is not None else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(WorkScreen(self.source, event.row_key.value))
