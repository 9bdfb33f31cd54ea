"""The dashboard: every pipeline with its counts, works finished per minute over the last
hour, and the buckets (waiting, held, redelivered per pipeline, site and priority)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Label, Sparkline

from workflow.core.display import counted
from workflow.tui.base import LiveScreen, StatusLine, fill, selected_key
from workflow.tui.rows import BUCKET_COLUMNS, PIPELINE_COLUMNS, bucket_key, bucket_rows, pipeline_rows, sparkline_label

#: The sparkline's span.
MINUTES = 60


class OpenWorks(Message):
    """Show the works view searching for ``query``."""

    def __init__(self, query: str) -> None:
        super().__init__()
        self.query = query


class DashboardScreen(LiveScreen):
    """Pipelines, throughput and buckets, live."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open_pipeline", "Works of pipeline", show=True),
        Binding("tab", "focus_next", "Next table", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="pipelines", cursor_type="row", zebra_stripes=True)
        with Vertical(id="throughput-box"):
            yield Label("finished per minute", id="throughput-label")
            yield Sparkline([0] * MINUTES, id="throughput")
        yield DataTable(id="buckets", cursor_type="row", zebra_stripes=True)
        yield StatusLine("connecting…")
        yield Footer()

    def on_mount(self) -> None:
        pipelines = self.query_one("#pipelines", DataTable)
        pipelines.add_columns(*PIPELINE_COLUMNS)
        pipelines.border_title = "pipelines (enter: its works)"
        buckets = self.query_one("#buckets", DataTable)
        buckets.add_columns(*BUCKET_COLUMNS)
        buckets.border_title = "buckets"
        self.query_one("#throughput-box").border_title = "throughput"

    async def load(self) -> None:
        answers = await asyncio.gather(
            self.ask(lambda client: client.results.pipelines(fresh=True)),
            self.ask(lambda client: client.results.throughput(MINUTES, fresh=True)),
            self.ask(lambda client: client.buckets()),
        )
        counts, per_minute, buckets = answers
        if counts is not None:
            rows = pipeline_rows(counts)
            fill(self.query_one("#pipelines", DataTable), rows, [row[0] for row in rows])
            total = sum(c.get("total", 0) for c in counts.values())
            self.show_status(f"{counted(len(counts), 'pipeline')}, {counted(total, 'work')} · / searches the works")
        if per_minute is not None:
            self.query_one("#throughput", Sparkline).data = per_minute
            self.query_one("#throughput-label", Label).update(sparkline_label(per_minute))
        if buckets is not None:
            rows = bucket_rows(buckets)
            fill(self.query_one("#buckets", DataTable), rows, [bucket_key(row) for row in rows])

    def action_open_pipeline(self) -> None:
        pipeline = selected_key(self.query_one("#pipelines", DataTable))
        self.post_message(OpenWorks(f"pipeline:{pipeline}" if pipeline else ""))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "pipelines":
            self.action_open_pipeline()
        elif event.data_table.id == "buckets":
            pipeline, site, _priority = (event.row_key.value or "//").split("/")
            self.post_message(OpenWorks(f"pipeline:{pipeline} site:{site} status:queued"))
