"""What every view shares: the source it reads, a status line, and a refresh that coalesces.

A view reloads when it is shown, when the log changes (the app forwards :class:`LogChanged`),
when the connection comes back, and on the app's slow safety timer. Loads never pile up: a
reload asked for while one runs is folded into one more run after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from textual import work
from textual.coordinate import Coordinate
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

import workflow
from workflow.core.errors import WorkflowError
from workflow.core.search import SYNTAX_HELP
from workflow.tui.rows import FeedItem, Row
from workflow.tui.source import Source

T = TypeVar("T")


class LogChanged(Message, bubble=False):  # the app sends one to each view; it must not come back up
    """New events were published to the log (a debounced batch of them)."""

    def __init__(self, batch: list[FeedItem]) -> None:
        super().__init__()
        self.batch = batch


class Reconnected(Message, bubble=False):
    """The connection is (again) up: whatever happened meanwhile was missed; reload."""


class StatusLine(Static):
    """One line under a view: what it shows, or what went wrong."""


class LiveScreen(Screen[None]):
    """A view that loads from the source and reloads when the log changes."""

    #: What ``?`` shows under the keys: the title and syntax of this view's search or
    #: filter (the works search, which ``/`` opens from any view, unless a view says otherwise).
    SYNTAX: ClassVar[tuple[str, str] | None] = ("Search (/: the works view)", SYNTAX_HELP)

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self._loading = False
        self._again = False
        self._shown = False

    async def load(self) -> None:
        """Read what the view shows and fill its widgets (each view defines it)."""

    def reload(self) -> None:
        """Load now, or once more after the load that is running."""
        if self._loading:
            self._again = True
            return
        self._loading = True
        self._reload()

    @work(group="load")
    async def _reload(self) -> None:
        try:
            while True:
                self._again = False
                await self.load()
                if not self._again:
                    break
        except NoMatches:  # the widgets went away while the answer travelled: the app is closing
            pass
        finally:
            self._loading = False

    def on_screen_suspend(self) -> None:
        self._shown = False

    def on_screen_resume(self) -> None:
        """Load when the view comes (back) into sight; textual also resumes a screen that
        never left (on a resize, after a notification), which must not start a load."""
        if not self._shown:
            self._shown = True
            self.reload()

    def on_log_changed(self, message: LogChanged) -> None:
        self.reload()

    def on_reconnected(self, message: Reconnected) -> None:
        self.reload()

    async def ask(self, question: Callable[[workflow.Client], Awaitable[T]]) -> T | None:
        """The answer, or None when it failed (the error shown in the status line) or the
        screen went away meanwhile (its widgets are gone)."""
        try:
            answer = await self.source.ask(question)
        except WorkflowError as error:
            if self.is_attached:
                self.show_status(str(error), error=True)
            return None
        return answer if self.is_attached else None

    def show_status(self, text: str, error: bool = False) -> None:
        for line in self.query(StatusLine):
            line.update(text)
            line.set_class(error, "error")


def fill(table: DataTable[Any], rows: Sequence[Row], keys: Sequence[str]) -> None:
    """Replace a table's rows, keeping the cursor on the same row when it is still there."""
    current = selected_key(table)
    table.clear()
    for row, key in zip(rows, keys, strict=True):
        table.add_row(*row, key=key)
    if current is not None and current in keys:
        table.move_cursor(row=table.get_row_index(current))


def selected_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor (None in an empty table)."""
    if not table.row_count or table.cursor_row >= table.row_count:
        return None
    return table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
