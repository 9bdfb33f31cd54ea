"""``workflow configs deploy|ls|ps|stop|retry|rm|convert``: analysis chains written as YAML files.

A file with problems is reported like a compiler's output, one ``FILE:LINE:COLUMN: what``
line per problem on stderr, exit 2, and nothing is written (see :mod:`workflow.core.configs`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from ulid import ULID

from workflow.cli.options import AsJson, Connection, connection_options
from workflow.cli.output import console, errors, print_json, reported, with_client
from workflow.core import config_convert, runs
from workflow.core import configs as cfg
from workflow.core.display import when, when_in
from workflow.core.schedules import next_firing
from workflow.log.configs import Deployment, RunState

ConfigName = Annotated[str, typer.Argument(metavar="NAME", help="The configuration's name (its `name:`).")]
RunId = Annotated[str, typer.Argument(metavar="RUN", help="The run's id (`workflow configs ps NAME`).")]


def _read(file: Path) -> cfg.Config:
    """The configuration in ``file``; every problem on stderr and exit 2 if it has any."""
    try:
        text = file.read_text()
    except OSError as error:
        errors.print(f"error: cannot read {file}: {error.strerror or error}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    try:
        return cfg.parse(text, str(file))
    except cfg.ConfigError as error:
        for problem in error.problems:
            errors.print(problem.located(str(file)), markup=False, highlight=False)
        count = len(error.problems)
        errors.print(f"error: {count} problem{'s' if count > 1 else ''} in {file}; nothing deployed",
                     markup=False, highlight=False)
        raise typer.Exit(2) from None


@connection_options
def deploy(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The configuration (YAML).")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the works a run would deposit; write nothing, connect to nothing.")] = False,
    as_json: AsJson = False,
    *,
    connection: Connection,
) -> None:
    """Deploy a pipeline configuration and start a run of it (with a `schedule:`, a run at each firing).

    Every step's works are deposited at once, each waiting for the works of the earlier
    stages (`if: failure | always` steps for them to finish); `workflow server` releases
    them. Their config.parent is the run's id: `workflow ls --run RUN`.

    Example: workflow configs deploy examples/localise.yaml --dry-run
    """
    config = _read(file)
    if dry_run:
        with reported():
            _print_plan(cfg.plan(config, str(ULID()), 0.0), as_json)
        return
    deployment: Deployment = with_client(connection, lambda client: client.deploy_config(config, file=str(file)))
    started, plan = deployment.started, deployment.plan
    if as_json:
        print_json({"name": config.name, "deployed": deployment.deployed.id,
                    "schedule": deployment.deployed.schedule, "count": deployment.deployed.count,
                    "timezone": deployment.deployed.timezone or "UTC",
                    "run": None if started is None else started.run,
                    "works": [] if plan is None else [planned.work.id for planned in plan.works]})
        return
    if started is None:
        count, zone = deployment.deployed.count, deployment.deployed.timezone or "UTC"
        console.print(f"configuration {config.name} deployed: a run at each firing of {deployment.deployed.schedule} "
                      f"({zone}){f', {count} runs' if count else ''} (schedule {runs.schedule_name(config.name)})",
                      highlight=False)
        return
    console.print(f"configuration {config.name} deployed; run {started.run} started with "
                  f"{started.works} works (workflow configs ps {config.name})", highlight=False)


def _print_plan(plan: cfg.Plan, as_json: bool) -> None:
    if as_json:
        print_json([{"step": p.step, "matrix": p.combination, "work": p.work.payload} for p in plan.works])
        return
    stage_of = {step.name: step.stage for step in plan.config.steps}
    condition_of = {step.name: step.rule for step in plan.config.steps}
    table = Table("step", "stage", "if", "matrix", "pipeline", "site", "parameters", "waits for")
    for planned in plan.works:
        stage = stage_of[planned.step]
        table.add_row(
            planned.step, "after all" if stage is None else str(stage), condition_of[planned.step],
            json.dumps(planned.combination), planned.work.pipeline, planned.work.site,
            json.dumps(planned.work.parameters), f"{len(planned.work.precursors or [])} works",
        )
    console.print(table)
    console.print(f"{len(plan.works)} works; dry run: nothing deployed", highlight=False)


@connection_options
def ls(as_json: AsJson = False, *, connection: Connection) -> None:
    """The configurations deployed, with their runs, read from the log."""
    found: list[runs.History] = with_client(connection, lambda client: client.configs())
    if as_json:
        print_json([_history_dict(history) for history in found])
        return
    table = Table("name", "state", "schedule", "next", "deployed (UTC)", "by", "file", "runs", "last run",
                  "started (UTC)")
    for history in found:
        current = history.current
        assert current is not None
        last = history.run()
        runs_made = f"{history.runs_of(current)}" + (f" of {current.count}" if current.count else "")
        schedule = f"{current.schedule} {current.timezone or 'UTC'}" if current.schedule else ""
        table.add_row(history.name, history.state, schedule, when_in(_next(history), current.timezone),
                      when(history.deployed_at), current.by or "", current.file or "", runs_made,
                      last.started.run if last else "", when(last.started_at) if last else "")
    console.print(table)


def _next(history: runs.History) -> float | None:
    """The next firing of a scheduled configuration still in force (None: none)."""
    current = history.current
    if current is None or current.schedule is None or history.expired:
        return None
    return next_firing(current.schedule, time.time(), since=history.deployed_at, timezone=current.timezone)


def _history_dict(history: runs.History) -> dict[str, Any]:
    current = history.current
    return {
        "next_firing": _next(history),
        "name": history.name,
        "deployed": None if current is None else current.id,
        "deployed_at": history.deployed_at,
        "deployed_by": None if current is None else current.by,
        "file": None if current is None else current.file,
        "state": history.state,
        "schedule": None if current is None else current.schedule,
        "count": None if current is None else current.count,
        "timezone": None if current is None or current.schedule is None else current.timezone or "UTC",
        "runs": [_run_dict(run) for run in history.runs.values()],
    }


def _run_dict(run: runs.Run) -> dict[str, Any]:
    return {
        "run": run.started.run, "started_at": run.started_at, "works": run.started.works,
        "stopped_at": None if run.stopped is None else run.stopped.time,
        "retries": [{"retry": r.retry, "at": r.time, "replaced": len(r.replaced)} for r in run.retries],
    }


@connection_options
def ps(
    name: ConfigName,
    run: Annotated[str | None, typer.Argument(metavar="[RUN]", help="A run's id (default: the latest).")] = None,
    as_json: AsJson = False,
    *,
    connection: Connection,
) -> None:
    """A run's status, current stage and each step's works by status; then the history of runs."""
    state: RunState = with_client(connection, lambda client: client.config_run(name, run))
    view = state.view
    if as_json:
        print_json({
            "name": name, "run": view.run, "status": view.status, "stage": view.stage,
            "steps": [{"name": s.name, "stage": s.stage, "if": s.condition, "status": s.status, "counts": s.counts}
                      for s in view.steps],
            "works": {slot.work.id: {"step": slot.step, "status": state.statuses.get(slot.work.id or "")}
                      for slot in state.slots},
            "history": [_run_dict(r) for r in state.history.runs.values()],
        })
        return
    stage = "done" if view.stage is None else view.stage
    console.print(f"{name} run {view.run}: {view.status} (stage {stage})", highlight=False)
    table = Table("step", "stage", "if", "status", "works")
    for step in view.steps:
        counts = ", ".join(f"{count} {status}" for status, count in sorted(step.counts.items()))
        table.add_row(step.name, "after all" if step.stage is None else str(step.stage), step.condition,
                      step.status, counts)
    console.print(table)
    history = Table("run", "started (UTC)", "works", "stopped (UTC)", "retries")
    for past in state.history.runs.values():
        history.add_row(past.started.run, when(past.started_at), str(past.started.works),
                        when(past.stopped.time) if past.stopped else "", str(len(past.retries)))
    console.print(history)


@connection_options
def stop(
    name: ConfigName,
    run: RunId,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the log).")] = None,
    as_json: AsJson = False,
    *,
    connection: Connection,
) -> None:
    """Stop a run: recorded in the log, then each of its works not finished is cancelled."""
    event, cancelled = with_client(connection, lambda client: client.stop_run(name, run, reason))
    if as_json:
        print_json({"name": name, "run": run, "stopped": event.id, "cancelled": cancelled})
        return
    console.print(f"run {run} of {name} stopped: {len(cancelled)} works cancelled", highlight=False)


@connection_options
def retry(name: ConfigName, run: RunId, as_json: AsJson = False, *, connection: Connection) -> None:
    """Run again what failed or was cancelled in a finished run, and every step that followed it."""
    event: runs.RunRetried = with_client(connection, lambda client: client.retry_run(name, run))
    if as_json:
        print_json({"name": name, "run": run, "retry": event.retry, "replaced": event.replaced})
        return
    console.print(f"run {run} of {name}: retry {event.retry}, {len(event.replaced)} works deposited again",
                  highlight=False)


@connection_options
def rm(
    name: ConfigName,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the log).")] = None,
    as_json: AsJson = False,
    *,
    connection: Connection,
) -> None:
    """Remove a configuration (its runs under way go on: `configs stop` them)."""
    event: runs.ConfigRemoved = with_client(connection, lambda client: client.remove_config(name, reason))
    if as_json:
        print_json({"name": name, "removed": event.id})
        return
    console.print(f"configuration {name} removed", highlight=False)


def convert(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A configuration of the old system (pipeline: {...}).")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the converted file here (default: print it).")] = None,
) -> None:
    """Rewrite a configuration of the system users come from in this format (see docs/howto/configs.md).

    The changes it made are noted on stderr; the result is then checked as `deploy` would:
    a problem no rule can decide (a step with no pipeline) is reported with its line in the
    converted file, exit 1, the file still written for you to finish. Connects to nothing.

    Example: workflow configs convert old.yaml -o localise.yaml
    """
    try:
        text = file.read_text()
    except OSError as error:
        errors.print(f"error: cannot read {file}: {error.strerror or error}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    try:
        converted = config_convert.convert(text, str(file))
    except cfg.ConfigError as error:
        for problem in error.problems:
            errors.print(problem.located(str(file)), markup=False, highlight=False)
        raise typer.Exit(2) from None
    if output is None:
        print(converted.text, end="")
    else:
        output.write_text(converted.text)
    for note in converted.notes:
        errors.print(f"note: {note}", markup=False, highlight=False)
    target = str(output or "<converted>")
    try:
        cfg.parse(converted.text, target)
    except cfg.ConfigError as error:
        for problem in error.problems:
            errors.print(problem.located(target), markup=False, highlight=False)
        errors.print(f"error: the converted file has {len(error.problems)} problem(s) no rule decides; edit it",
                     markup=False, highlight=False)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    """Add ``configs deploy|ls|ps|stop|retry|rm|convert`` to the CLI."""
    configs_app = typer.Typer(
        help="Analysis chains as YAML files: steps in stages, matrices, if: success | failure | always | expressions.",
        no_args_is_help=True,
    )
    for command in (deploy, ls, ps, stop, retry, rm, convert):
        configs_app.command(command.__name__)(command)
    app.add_typer(configs_app, name="configs")
