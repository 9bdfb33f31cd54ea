"""The runs view: each configuration's runs, as ``workflow configs ps`` shows one, live.

The upper table lists the runs of every configuration deployed, newest first (the latest
:data:`RUNS_SHOWN` of each: a run's status is read from its works' heads, so the view does
not read every run ever made): its status, current stage and its works counted by status.
The lower table shows the steps of the run under the cursor (stage, ``if``, status, counts).
``enter`` opens the run's works: the works view searching ``run:ID`` (their ``config.parent``).
"""

from __future__ import annotations

import asyncio
import functools
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header

import workflow
from workflow.core import runs
from workflow.core.display import counted
from workflow.log.configs import RunState
from workflow.tui.base import LiveScreen, StatusLine, fill, selected_key
from workflow.tui.dashboard import OpenWorks
from workflow.tui.rows import Row, short_time
from workflow.tui.source import Source

#: Runs shown per configuration (its latest).
RUNS_SHOWN = 5
RUN_COLUMNS = ("configuration", "run", "started", "status", "stage", "works")
STEP_COLUMNS = ("step", "stage", "if", "status", "works")


def stage_cell(stage: int | str | None) -> str:
    return "done" if stage is None else "after all" if stage == "final" else str(stage)


def counts_cell(counts: dict[str, int]) -> str:
    """``5 success, 1 failure``: a step's (or a run's) works by status, most first (then by name)."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{count} {status}" for status, count in ordered)


def run_row(name: str, state: RunState) -> Row:
    view = state.view
    totals: dict[str, int] = {}
    for step in view.steps:
        for status, count in step.counts.items():
            totals[status] = totals.get(status, 0) + count
    status = view.status + (f" (retried {len(state.run.retries)}×)" if state.run.retries else "")
    return (name, view.run, short_time(state.run.started_at), status, stage_cell(view.stage), counts_cell(totals))


def step_rows(view: runs.RunView) -> list[Row]:
    return [(step.name, "after all" if step.stage is None else str(step.stage), step.condition, step.status,
             counts_cell(step.counts)) for step in view.steps]


async def _run_state(client: workflow.Client, name: str, run_id: str) -> RunState:
    return await client.config_run(name, run_id)


class RunsScreen(LiveScreen):
    """Configurations and their runs; ``enter`` opens a run's works."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open_run", "Works of run", show=True, priority=True),  # over the tables' own enter
        Binding("tab", "focus_next", "Next table", show=False),
    ]
    SYNTAX: ClassVar[tuple[str, str] | None] = (
        "Runs",
        f"each configuration's latest {RUNS_SHOWN} runs (workflow configs ps NAME RUN for more);\n"
        "the lower table: the steps of the run under the cursor;\n"
        "enter: the run's works (the works search run:ID)",
    )

    def __init__(self, source: Source) -> None:
        super().__init__(source)
        self.states: dict[str, RunState] = {}  # by run id, the runs shown

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="steps", cursor_type="row", zebra_stripes=True)
        yield StatusLine("connecting…")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_columns(*RUN_COLUMNS)
        table.border_title = "configuration runs (enter: its works)"
        steps = self.query_one("#steps", DataTable)
        steps.add_columns(*STEP_COLUMNS)
        steps.border_title = "steps"
        table.focus()

    async def load(self) -> None:
        histories = await self.ask(lambda client: client.configs())
        if histories is None:
            return
        wanted = [(history.name, run_id) for history in histories
                  for run_id in list(history.runs)[::-1][:RUNS_SHOWN]]
        answers = await asyncio.gather(*(self.ask(functools.partial(_run_state, name=name, run_id=run_id))
                                         for name, run_id in wanted))
        rows: list[Row] = []
        states: dict[str, RunState] = {}
        for (name, run_id), state in zip(wanted, answers, strict=True):
            if state is not None:
                states[run_id] = state
                rows.append(run_row(name, state))
        rows.sort(key=lambda row: row[1], reverse=True)  # run ids are ULIDs: newest first
        self.states = states
        fill(self.query_one("#runs", DataTable), rows, [row[1] for row in rows])
        self._show_steps()
        running = sum(state.view.status == "running" for state in states.values())
        self.show_status(f"{counted(len(histories), 'configuration')}, {counted(len(states), 'run')} shown, "
                         f"{running} running · enter: a run's works")

    def _show_steps(self) -> None:
        run_id = selected_key(self.query_one("#runs", DataTable))
        state = self.states.get(run_id or "")
        steps = self.query_one("#steps", DataTable)
        rows = step_rows(state.view) if state is not None else []
        fill(steps, rows, [row[0] for row in rows])
        steps.border_title = f"steps of run {run_id}" if state is not None else "steps"

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "runs":
            self._show_steps()

    def action_open_run(self) -> None:
        run_id = selected_key(self.query_one("#runs", DataTable))
        if run_id:
            self.post_message(OpenWorks(f"run:{run_id}"))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "runs":
            self.action_open_run()
