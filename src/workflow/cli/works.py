"""Commands on works, live from the log: deposit, cancel, requeue, delete, show, history, buckets.

``cancel``, ``requeue`` and ``delete`` take one id, several, or filters (:mod:`workflow.cli.bulk`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import shlex
from typing import Annotated, Any

import typer
from rich.table import Table

import workflow
from workflow.cli.bulk import Ids, Selection, Yes, act
from workflow.cli.options import AsJson, Connection, connection_options, option_group
from workflow.cli.output import console, errors, fail, listing, print_json, reported, with_client
from workflow.cli.workspace import chosen
from workflow.core.display import describe, waits_of, when
from workflow.core.errors import ValidationError
from workflow.core.status import FINISHED

WorkId = Annotated[str, typer.Argument(metavar="ID", help="The work's id.")]
Reason = Annotated[str | None, typer.Option(help="Why (recorded in the history).")]
#: How a finished work ended, as the end of "it ...".
ENDED = {"success": "succeeded", "failure": "failed", "cancelled": "was cancelled", "deleted": "was deleted"}


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses (1, 2.5, true, [1,2]), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected key=value, got {text!r}", param_hint="--param")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


@dataclasses.dataclass(frozen=True)
class TemplateFields:
    """The options that become a work's fields, shared by ``deposit`` and ``schedule add``
    (each firing of a schedule deposits this template)."""

    priority: Annotated[int, typer.Option("--priority", help="1 to 5; 5 runs first.")] = 3
    site: Annotated[str, typer.Option("--site", help="Where it may run (chime, kko, gbo, ..., local).")] = "local"
    function: Annotated[str | None, typer.Option("--function", help="Dotted path of the function to run.")] = None
    command: Annotated[str | None, typer.Option(
        "--command", help="A command line to run instead of a function.")] = None
    timeout: Annotated[int, typer.Option("--timeout", help="Seconds an attempt may run (1 to 259200).")] = 3600
    retries: Annotated[int, typer.Option("--retries", help="Retries after a failed attempt (0 to 5).")] = 2
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Label, repeatable.")] = None

    def work(self, pipeline: str, parameters: dict[str, Any] | None) -> workflow.Work:
        """A new Work with these fields (ValidationError naming the first bad one)."""
        return workflow.Work(pipeline=pipeline, parameters=parameters, **self._fields())

    def _fields(self) -> dict[str, Any]:
        return {
            "priority": self.priority, "site": self.site, "function": self.function,
            "command": shlex.split(self.command) if self.command else None,
            "timeout": self.timeout, "retries": self.retries, "tags": self.tag or None,
        }


@dataclasses.dataclass(frozen=True)
class WorkFields(TemplateFields):
    """The options of ``deposit`` that become the new work's fields: a template's, and
    what only a single deposit names (its event, user, precursors)."""

    event: Annotated[list[int] | None, typer.Option(
        "--event", "-e", help="Telescope event number, repeatable.")] = None
    user: Annotated[str | None, typer.Option("--user", help="Who asked (the work's user, not a NATS login).")] = None
    after: Annotated[list[str] | None, typer.Option(
        "--after", help="Wait until this work succeeded (a work id, repeatable: all of them).")] = None
    config: Annotated[str | None, typer.Option(
        "--config", help='The work\'s config as a JSON object, e.g. \'{"archive": {"products": "move"}, '
                         '"retry_on": ["error"]}\'.')] = None

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "event": self.event or None, "user": self.user, "precursors": self.after or None,
                "config": _json_object("config", self.config)}


def _json_object(name: str, text: str | None) -> dict[str, Any] | None:
    """An option's JSON object (None when not given); a ValidationError naming the option
    for anything else."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationError(name, f"--{name} is a JSON object, e.g. '{{\"retry_on\": [\"error\"]}}': {error}") \
            from None
    if not isinstance(value, dict):
        raise ValidationError(name, f"--{name} is a JSON object ({{...}}), not {type(value).__name__}")
    return value


@connection_options
@option_group(WorkFields, "fields")
def deposit(
    pipeline: Annotated[str, typer.Argument(metavar="PIPELINE", help="Pipeline name (letters, digits and '-').")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-P", help="key=value, repeatable; values are JSON when they parse.")] = None,
    *,
    fields: WorkFields,
    count: Annotated[int, typer.Option(help="Deposit this many identical works.", min=1)] = 1,
    delay: Annotated[str | None, typer.Option(
        "--delay", help="Enter the bucket only after this long: 30s, 5m, 2h.")] = None,
    at: Annotated[str | None, typer.Option(
        "--at", help="Enter the bucket only at this ISO time, e.g. 2026-12-01T02:00:00Z.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help='Print the new ids as one JSON list, e.g. ["01M94HW080CMMTZT9J21H6QR30"], '
                       "instead of one id per line.")] = False,
    connection: Connection,
) -> None:
    """Deposit work into its bucket (or make it wait: --after, --delay, --at); prints the new ids.

    Example: workflow deposit sample-pipeline --param a=1 --param b=2 --priority 5

    With an active workspace (`workflow workspace set`), a site it does not name is refused
    and its NATS URLs are used when --nats is not given.
    """
    parameters = dict(parse_param(p) for p in param or []) or None
    with reported():
        works = [fields.work(pipeline, parameters) for _ in range(count)]
        workspace = chosen(None)  # the active workspace (`workflow workspace set`): its sites are strict
        if workspace is not None:
            workspace.check_site(works[0].site)
            if connection.url is None:
                connection = dataclasses.replace(connection, url=workspace.nats_url())
    ids = with_client(connection, lambda client: client.deposit(works, delay=delay, at=at))
    if as_json:
        print_json(ids)
    else:
        for work_id in ids:
            console.print(work_id, highlight=False)


@connection_options
@option_group(Selection, "chosen")
def cancel(
    ids: Ids = None, reason: Reason = None, yes: Yes = False, as_json: AsJson = False, *, chosen: Selection,
    connection: Connection,
) -> None:
    """Cancel works: a queued work never runs; a running one stops as soon as its worker hears it.

    By id, or every work matching filters (asks first; each work its own event, and one that
    changed meanwhile is skipped and counted).

    Example: workflow cancel --pipeline sample-pipeline --status queued --tag night-42 --yes
    """

    async def one(client: workflow.Client, work_id: str) -> str:
        await client.cancel(work_id, reason=reason)
        return f"cancelled {work_id}"

    act("cancel", ids, chosen, yes=yes, as_json=as_json, connection=connection, single=one, reason=reason)


@connection_options
@option_group(Selection, "chosen")
def requeue(
    ids: Ids = None,
    priority: Annotated[int | None, typer.Option(help="New priority (1 to 5).")] = None,
    site: Annotated[str | None, typer.Option(help="New site.")] = None,
    reason: Reason = None,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", "--force",
        help="Act without asking, also on works that succeeded (which then run again).")] = False,
    as_json: AsJson = False,
    *,
    chosen: Selection,
    connection: Connection,
) -> None:
    """Put queued or finished works (back) in their buckets: re-prioritise, move, or retry them.

    By id, or every work matching filters (asks first). A running work is refused (cancel it
    first). A work that succeeded runs again: asked first (--force does not ask); its results
    are replaced by the new run's, the old ones stay in its history.

    Example: workflow requeue --pipeline sample-pipeline --status failure --priority 5 --yes
    """
    if ids and not yes:
        confirm_rerun(connection, ids, priority=priority, site=site)

    async def one(client: workflow.Client, work_id: str) -> str:
        before = await client.get(work_id)
        work = await client.requeue(work_id, priority=priority, site=site, reason=reason)
        where = f"priority {work.priority}, site {work.site}"
        if before.status in FINISHED:
            return f"requeued {work_id}: it {ENDED[before.status]} and runs again; queued at {where}"
        return f"requeued {work_id}: {before.status}, now at {where}"

    act("requeue", ids, chosen, yes=yes, as_json=as_json, connection=connection, single=one,
        priority=priority, site=site, reason=reason)


def confirm_rerun(connection: Connection, ids: list[str], *, priority: int | None, site: str | None) -> None:
    """Ask before re-queueing works that succeeded (a re-run replaces what ``show`` reports
    as their results); exit 1, nothing changed, without a yes. Other works do not ask: a
    failed or cancelled one is re-queued to be retried, a queued one is moved."""

    async def succeeded(client: workflow.Client) -> list[workflow.Work]:
        works = await asyncio.gather(*(client.get(work_id) for work_id in ids), return_exceptions=True)
        return [work for work in works if isinstance(work, workflow.Work) and work.status == "success"]

    done = with_client(connection, succeeded)
    if not done:
        return
    where = "".join((f" at priority {priority}" if priority else "", f" at site {site}" if site else ""))
    for work in done:
        errors.print(f"{work.id} succeeded (results: {json.dumps(work.results)}); re-queued{where}, it runs again "
                     "and show reports the new run's results (the old ones stay in its history).",
                     markup=False, highlight=False)
    question = "Run it again?" if len(done) == 1 else f"Run these {len(done)} works again?"
    try:
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # no answer (stdin closed): not a yes
        errors.print()
        agreed = False
    if not agreed:
        raise fail("not confirmed; nothing was re-queued (--force re-queues without asking)", 1)


@connection_options
@option_group(Selection, "chosen")
def delete(
    ids: Ids = None, reason: Reason = None, yes: Yes = False, as_json: AsJson = False,
    products: Annotated[bool, typer.Option(
        "--products", help="Also remove the works' archived products and plots (every attempt's); the "
        "Deleted event records which. Takes work ids.")] = False,
    *, chosen: Selection, connection: Connection,
) -> None:
    """Delete works: hidden from ls, count, pipelines and the TUI from now on (ls and count
    show them with --include-deleted); show and history still read them, and the log keeps
    every event for audits. A work not yet finished is cancelled first.

    Example: workflow delete --pipeline sample-pipeline --status success --until 2026-01-01 --yes

    Example: workflow delete 01J... --products
    """

    async def one(client: workflow.Client, work_id: str) -> str:
        event = await client.delete(work_id, reason=reason, products=products)
        removed = f", {len(event.products_removed or [])} archived files removed" if products else ""
        return f"deleted {work_id}{removed}"

    if products:
        if not ids or chosen.filter():
            raise fail("--products takes work ids (workflow delete ID... --products), not filters", 2)
        for work_id in ids:
            console.print(with_client(connection, functools.partial(one, work_id=work_id)),
                          highlight=False)
        return

    act("delete", ids, chosen, yes=yes, as_json=as_json, connection=connection, single=one, reason=reason)


@connection_options
def buckets(as_json: AsJson = False, *, connection: Connection) -> None:
    """Every bucket (pipeline, site, priority): the works waiting in it, and its messages.

    waiting: works queued in the bucket, the ones that can run (a retry once its delay is
    over), from the results service. undelivered: queue messages no worker has taken yet,
    live from NATS; it also counts works cancelled, deleted or moved since they were
    queued, until a worker meets their message and drops it. held: taken by a worker and
    not yet acknowledged (running, or waiting for a retry); redelivered: of those, taken
    more than once.
    """
    stats = with_client(connection, lambda client: client.buckets())
    if as_json:
        print_json(stats)
        return
    table = listing("pipeline", "site", "pri", "waiting", "undelivered", "held", "redelivered", "lease (s)")
    for s in stats:
        table.add_row(s.pipeline, s.site, str(s.priority), "?" if s.waiting is None else str(s.waiting),
                      str(s.undelivered), str(s.held), str(s.redelivered), f"{s.lease_seconds:g}")
    console.print(table if stats else "no buckets yet: deposit some work")
    if any(s.waiting is None for s in stats):
        errors.print("waiting: ? (no results service answers; undelivered also counts the messages of works "
                     "cancelled or moved since they were queued)", markup=False, highlight=False)


@connection_options
def show(work_id: WorkId, as_json: AsJson = False, *, connection: Connection) -> None:
    """Show one work as it is now (folded from its events in the log)."""
    work = with_client(connection, lambda client: client.get(work_id))
    if as_json:
        print_json(work.payload)
        return
    table = Table(show_header=False, box=None)
    if work.status == "waiting":
        table.add_row("waits", waits_of(work))
    for key, value in work.payload.items():
        if key in ("creation", "start", "stop"):
            value = when(value)
        shown = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        table.add_row(key, "-" if value is None else shown)
    console.print(table)


@connection_options
def history(work_id: WorkId, as_json: AsJson = False, *, connection: Connection) -> None:
    """The timeline of one work: every event, with time, attempt and who recorded it."""
    records = with_client(connection, lambda client: client.history_records(work_id))
    if not records:
        raise fail(f"no work with id {work_id}", 1)
    if as_json:
        print_json([{"seq": r.seq, "subject": r.subject, "event": r.event} for r in records])
        return
    table = listing("seq", "time (UTC)", "event", "attempt", "by", "what")
    for column in table.columns[:3]:
        column.no_wrap = True
    for r in records:
        table.add_row(
            str(r.seq), when(r.event.time), type(r.event).__name__, str(getattr(r.event, "attempt", "")),
            r.event.by or "", describe(r.event),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add these commands to the ``workflow`` CLI."""
    for command in (deposit, cancel, requeue, delete, buckets, show, history):
        app.command()(command)
