"""One work in full: every field, its parameters and results, its products and plots, and
its whole timeline (each attempt, the worker, the error and the traceback).

Read from the log itself (``client.history_records``) and folded here with the core's
fold, so the view is exact even when the projection trails, and it reloads when an event
of this work is published.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from rich.console import Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from workflow.core import events as ev
from workflow.core.display import describe, waits_of, when
from workflow.core.fold import fold
from workflow.core.work import Work
from workflow.log.client import Recorded
from workflow.tui.actions import WorkActionsScreen
from workflow.tui.base import LogChanged, StatusLine
from workflow.tui.source import Source

#: Fields shown in their own sections rather than in the table of fields.
SECTIONS = ("parameters", "results", "products", "plots")
TIMES = ("creation", "start", "stop")


def field_table(work: Work) -> Table:
    """Every field of the work but the long ones, one per line."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in msgspec.structs.asdict(work).items():
        if name in SECTIONS:
            continue
        shown = when(value) if name in TIMES else "-" if value is None else str(value)
        table.add_row(name, shown)
    return table


def pretty(value: dict[str, Any] | None) -> RenderableType:
    return Text("-", style="dim") if not value else JSON.from_data(value, indent=2, default=str)


def listed(names: list[str] | None) -> RenderableType:
    return Text("\n".join(f"• {name}" for name in names) if names else "-", style="" if names else "dim")


def timeline(records: list[Recorded]) -> RenderableType:
    """Each event with its attempt and worker; a failure's error and traceback under it."""
    table = Table(expand=True, show_edge=False, pad_edge=False)
    for column in ("seq", "time (UTC)", "event", "att", "by", "what"):
        table.add_column(column, overflow="fold", ratio=3 if column == "what" else None)
    for record in records:
        event = record.event
        attempt = getattr(event, "attempt", None)
        worker = getattr(event, "host", None) or event.by or "-"
        what: RenderableType = Text(describe(event))
        if isinstance(event, ev.Failed) and event.traceback:
            what = Group(Text(describe(event)), Text(event.traceback.rstrip(), style="red"))
        table.add_row(str(record.seq), when(event.time), type(event).__name__,
                      "-" if attempt is None else str(attempt), worker, what)
    return table


class WorkScreen(WorkActionsScreen):
    """The detail of one work."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,backspace", "back", "Back")]

    def __init__(self, source: Source, work_id: str) -> None:
        super().__init__(source)
        self.work_id = work_id
        self.work: Work | None = None
        self.records: list[Recorded] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="detail"):
            for section in ("fields", *SECTIONS, "timeline"):
                box = Static("…", id=section, classes="section")
                box.border_title = section
                yield box
        yield StatusLine("")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail").focus()

    async def load(self) -> None:
        records = await self.ask(lambda client: client.history_records(self.work_id))
        if records is None:
            return
        work = fold((record.event for record in records), skip_refused=True)
        if work is None:
            self.show_status(f"no work with id {self.work_id}", error=True)
            return
        self.work, self.records = work, records
        self.query_one("#fields", Static).update(field_table(work))
        self.query_one("#parameters", Static).update(pretty(work.parameters))
        self.query_one("#results", Static).update(pretty(work.results))
        self.query_one("#products", Static).update(listed(work.products))
        self.query_one("#plots", Static).update(listed(work.plots))
        self.query_one("#timeline", Static).update(timeline(records))
        waits = f" ({waits_of(work)})" if work.status == "waiting" else ""
        self.show_status(f"{work.id} · {work.pipeline} · {work.status}{waits} · {len(records)} events")

    def on_log_changed(self, message: LogChanged) -> None:
        if any(item.work_id == self.work_id for item in message.batch):
            self.reload()

    def selected_work(self) -> Work | None:
        return self.work

    def action_back(self) -> None:
        self.dismiss()
