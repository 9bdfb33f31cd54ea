"""``workflow schedule add|ls|rm``: recurring deposits, recorded in the log, fired by the server."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from workflow.cli.options import AsJson, Connection, connection_options, option_group
from workflow.cli.output import console, print_json, reported, with_client
from workflow.cli.works import TemplateFields, parse_param
from workflow.core.display import when, when_in
from workflow.core.errors import ValidationError
from workflow.core.schedules import Definition, check_name, check_timezone, next_firing, schedule_spec

ScheduleName = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name (letters, digits, '-').")]


@connection_options
@option_group(TemplateFields, "fields")
def add(
    name: ScheduleName,
    pipeline: Annotated[str, typer.Argument(help="Pipeline of the works it deposits.")],
    every: Annotated[str | None, typer.Option(
        "--every", help="Fire at this interval from now on: 30s, 10m, 1h30m (at least 1s).")] = None,
    cron: Annotated[str | None, typer.Option(
        "--cron", help='6 fields, seconds first, in UTC (or --tz): "0 0 2 * * *" is 02:00 daily; or @hourly, '
                       "@daily, @weekly, @monthly, @yearly.")] = None,
    tz: Annotated[str | None, typer.Option(
        "--tz", help="Read the cron in this IANA time zone (America/Vancouver), daylight saving included; "
                     "default UTC.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-P", help="key=value, repeatable; values are JSON when they parse.")] = None,
    *,
    fields: TemplateFields,
    connection: Connection,
) -> None:
    """Deposit a work at every firing: --every 10m, or --cron "0 0 2 * * *" (UTC, or --tz ZONE).

    Each firing deposits exactly one work (its id is derived from the schedule and the
    firing time), even with several servers running; the works' user is schedule:NAME
    (`workflow ls --user schedule:NAME`). `workflow server` fires it.

    Example: workflow schedule add nightly calibrate --cron "0 0 2 * * *" --tz America/Vancouver -P mode=full
    """
    parameters = dict(parse_param(p) for p in param or []) or None
    with reported():  # bad input: one line, exit 2, before any connection
        check_name(name)
        spec = schedule_spec(every, cron)
        timezone = check_timezone(tz)
        if timezone is not None and every is not None:
            raise ValidationError("tz", "--tz applies to --cron, not to --every (an interval has no time zone)")
        work = fields.work(pipeline, parameters)
    with_client(connection, lambda client: client.add_schedule(name, work, every=every, cron=cron,
                                                                  timezone=timezone))
    console.print(f"schedule {name} added: {spec} ({timezone or 'UTC'}) deposits {pipeline}", highlight=False)


@connection_options
def ls(as_json: AsJson = False, *, connection: Connection) -> None:
    """The schedules in force, read from the log."""
    found: list[Definition] = with_client(connection, lambda client: client.schedules())
    if as_json:
        print_json([_as_dict(d) for d in found])
        return
    table = Table("name", "schedule", "zone", "next", "pipeline", "parameters", "priority", "site", "added", "by")
    for definition in found:
        added = definition.added
        parameters = ", ".join(f"{k}={v}" for k, v in (added.work.parameters or {}).items())
        what = f"configuration {added.configuration}" if added.configuration else added.work.pipeline
        table.add_row(added.name, added.schedule, added.timezone or "UTC", when_in(_next(definition), added.timezone),
                      what, parameters,
                      str(added.work.priority), added.work.site, when(definition.added_at), added.by or "")
    console.print(table)


@connection_options
def rm(
    name: ScheduleName,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the log).")] = None,
    *,
    connection: Connection,
) -> None:
    """Remove a schedule: it fires no more (its works already deposited stay)."""
    with_client(connection, lambda client: client.remove_schedule(name, reason))
    console.print(f"schedule {name} removed", highlight=False)


def _next(definition: Definition) -> float | None:
    added = definition.added
    return next_firing(added.schedule, time.time(), since=definition.added_at, timezone=added.timezone)


def _as_dict(definition: Definition) -> dict[str, Any]:
    added = definition.added
    return {"name": added.name, "schedule": added.schedule, "timezone": added.timezone or "UTC",
            "pipeline": added.work.pipeline,
            "work": added.work.payload, "added_at": definition.added_at, "added_by": added.by, "id": added.id,
            "next_firing": _next(definition), "configuration": added.configuration}


def register(app: typer.Typer) -> None:
    """Add ``schedule add|ls|rm`` to the CLI."""
    schedule_app = typer.Typer(
        help="Recurring deposits: each firing deposits one work (recorded in the log, fired by `workflow server`).",
        no_args_is_help=True,
    )
    schedule_app.command("add")(add)
    schedule_app.command("ls")(ls)
    schedule_app.command("rm")(rm)
    app.add_typer(schedule_app, name="schedule")
