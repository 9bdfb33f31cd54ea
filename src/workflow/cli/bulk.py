"""The bulk forms of ``cancel``, ``requeue`` and ``delete``: by ids, or by filters.

One id keeps the single command's behaviour (and its exit codes). Several ids act on each
at its head now. Filters select in the read model (they must name a pipeline), then the
command says how many works match and asks before it touches any (``--yes`` does not
ask); each work then gets its own CAS'd event against the head it was seen at, and a work
that changed meanwhile is skipped and counted: ``cancelled 812, skipped 3 (changed
meanwhile)``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

import workflow
from workflow.cli.options import Connection, as_filter
from workflow.cli.output import console, fail, print_json, reported, with_client
from workflow.core.bulk import DONE, Action, BulkReport, Seen
from workflow.core.filters import WorkFilter
from workflow.results import selection

Ids = Annotated[list[str] | None, typer.Argument(
    metavar="ID", help="The works' ids (or select them with the filters below).", show_default=False)]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Act without asking for confirmation.")]
SELECTION_PANEL = "Select by filter (instead of ids)"


@dataclasses.dataclass(frozen=True)
class Selection:
    """Filters that select works in the read model; a pipeline is required. Its fields
    bear the core's WorkFilter names, as ``ls``'s :class:`~workflow.cli.options.WorkFilters`."""

    pipeline: Annotated[list[str] | None, typer.Option(
        "--pipeline", "-p", rich_help_panel=SELECTION_PANEL, help="Works of this pipeline (repeatable: any).")] = None
    status: Annotated[list[str] | None, typer.Option(
        "--status", "-s", rich_help_panel=SELECTION_PANEL, help="Works in this status (repeatable: any).")] = None
    tags: Annotated[list[str] | None, typer.Option(
        "--tag", "-t", rich_help_panel=SELECTION_PANEL, help="Works with this tag (repeatable: all of them).")] = None
    user: Annotated[str | None, typer.Option(
        "--user", rich_help_panel=SELECTION_PANEL, help="Works of this user.")] = None
    since: Annotated[str | None, typer.Option(
        "--since", rich_help_panel=SELECTION_PANEL, help="Works created at or after this ISO time.")] = None
    until: Annotated[str | None, typer.Option(
        "--until", rich_help_panel=SELECTION_PANEL, help="Works created before this ISO time.")] = None

    def filter(self) -> WorkFilter:
        """The core's filter of these options (see :func:`~workflow.cli.options.as_filter`)."""
        return as_filter(self)

    def describe(self) -> str:
        """The filters as the confirmation question names them."""
        shown = {"pipeline": self.pipeline, "status": self.status, "tag": self.tags, "user": self.user,
                 "since": self.since, "until": self.until}
        return "; ".join(f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in shown.items() if v)


def act(
    action: Action,
    ids: list[str] | None,
    chosen: Selection,
    *,
    yes: bool,
    as_json: bool,
    connection: Connection,
    single: Callable[[workflow.Client, str], Awaitable[str]],
    **options: Any,
) -> None:
    """Run ``action`` on the works ``ids`` or ``chosen`` names, and print what it did.

    ``single`` is the one-work command (its own message and errors) for exactly one id.
    """
    with reported():
        filters = chosen.filter()
        selection.check(ids or None, filters)
    if ids and len(ids) == 1 and not as_json:
        message = with_client(connection, lambda client: single(client, ids[0]))
        console.print(message, highlight=False)
        return
    if ids:
        report = with_client(connection, lambda client: client.bulk.by_ids(action, ids, **options))
    else:
        seen = with_client(connection, lambda client: client.select(filters))
        if not seen:
            _print(BulkReport(action), as_json, "no work matches; nothing changed")
            return
        if not yes:
            confirm(action, seen, chosen)
        report = with_client(connection, lambda client: client.bulk.apply(action, seen, **options))
    _print(report, as_json, report.summary())


def confirm(action: Action, seen: list[Seen], chosen: Selection) -> None:
    """Ask before acting (on stderr, so ``--json`` output stays clean); exit 1 if not."""
    question = f"{action} {len(seen):,} work{'s' if len(seen) != 1 else ''} ({chosen.describe()})?"
    try:
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # no answer (stdin at its end, or closed: see workflow.cli): not a yes
        agreed = False
    if not sys.stdin.isatty():  # an answer read from a pipe (or none) is not echoed: end the question's line
        typer.echo(err=True)
    if not agreed:
        raise fail(f"not confirmed; nothing was {DONE[action]} (--yes acts without asking)", 1)


def _print(report: BulkReport, as_json: bool, line: str) -> None:
    if as_json:
        print_json(report.as_dict())
    else:
        console.print(line, highlight=False)
