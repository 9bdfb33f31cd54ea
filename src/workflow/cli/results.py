"""CLI commands over the projection: ls, count, pipelines, replay, sql, export, projector.

``ls``, ``count`` and ``pipelines`` ask the results service (nobody opens the live
database behind the projector's back). ``replay`` builds a database file of one's own
from the log; ``sql`` queries such a file (or a Parquet export) read-only.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

import workflow
from workflow.cli.app import (
    AsJson, Creds, NatsUrl, NKey, Password, TlsCa, Token, User, connection, console, print_json, run, setup_logging, when,
    with_client,
)
from workflow.core.errors import ValidationError
from workflow.core.status import LOGGED

Pipeline = Annotated[str | None, typer.Option("--pipeline", "-p", help="Only this pipeline.")]
Status = Annotated[str | None, typer.Option("--status", "-s", help="Only this status (queued, running, success, failure, cancelled).")]
Fresh = Annotated[bool, typer.Option(
    "--fresh/--no-fresh",
    help="Wait until the projection holds every event logged so far, so you see your own writes; "
         "--no-fresh answers at once from what it holds.",
)]


def _since(text: str | None, field: str) -> float | None:
    from workflow.results.client import as_unix

    return as_unix(text, field)


def ls(
    pipeline: Pipeline = None,
    status: Status = None,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    user: Annotated[str | None, typer.Option(help="Only works of this user.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Only works with this tag (repeatable: all of them).")] = None,
    event: Annotated[list[int] | None, typer.Option("--event", "-e", help="Only works naming this telescope event (repeatable: any).")] = None,
    since: Annotated[str | None, typer.Option(help="Created at or after this ISO time.")] = None,
    until: Annotated[str | None, typer.Option(help="Created before this ISO time.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many works.")] = 20,
    offset: Annotated[int, typer.Option(help="Skip this many works first.")] = 0,
    order: Annotated[str, typer.Option(help="Order by a column, '-' prefix for descending.")] = "-creation",
    fresh: Fresh = True,
    as_json: AsJson = False,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """List works (newest first), from the results service."""

    works = with_client(
        connection(nats, nats_user, password, token, creds, nkey, tls_ca),
        lambda client: client.results.query(
            pipeline=pipeline, status=status, site=site, user=user, tags=tag or None, event=event or None,
            since=_since(since, "since"), until=_since(until, "until"), limit=limit, offset=offset, order=order,
            fresh=fresh,
        ),
    )
    if as_json:
        print_json([work.payload for work in works])
        return
    table = Table(Column("id", no_wrap=True), "pipeline", "status", "site", "prio", "attempt", "created (UTC)",
                  "stopped (UTC)", "user")
    for work in works:
        table.add_row(
            work.id, work.pipeline, work.status, work.site, str(work.priority), str(work.attempt),
            when(work.creation), when(work.stop), work.user or "",
        )
    console.print(table)


def count(
    pipeline: Pipeline = None,
    status: Status = None,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    user: Annotated[str | None, typer.Option(help="Only works of this user.")] = None,
    fresh: Fresh = True,
    as_json: AsJson = False,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """How many works match, from the results service."""

    total = with_client(
        connection(nats, nats_user, password, token, creds, nkey, tls_ca),
        lambda client: client.results.count(pipeline=pipeline, status=status, site=site, user=user, fresh=fresh),
    )
    if as_json:
        print_json({"count": total})
    else:
        console.print(str(total), highlight=False)


def pipelines(
    fresh: Fresh = True,
    as_json: AsJson = False,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Every pipeline with its number of works in each status."""

    found = with_client(
        connection(nats, nats_user, password, token, creds, nkey, tls_ca),
        lambda client: client.results.pipelines(fresh=fresh),
    )
    if as_json:
        print_json(found)
        return
    columns = ("total", *LOGGED)
    table = Table("pipeline", *columns)
    for name, counts in found.items():
        table.add_row(name, *(str(counts[c]) for c in columns))
    console.print(table)


def replay(
    db: Annotated[Path, typer.Option("--db", help="The new DuckDB file to build (must not exist).")],
    until: Annotated[str | None, typer.Option(help="Stop at this ISO time: the state of every work at that moment.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Build a fresh DuckDB from the log (from sequence 1), for audits and analysis."""
    from workflow.results.projector import replay as replay_log
    from workflow.results.client import as_unix

    async def go() -> int:
        until_time = as_unix(until, "until")
        async with workflow.connect(**connection(nats, nats_user, password, token, creds, nkey, tls_ca)) as client:
            if quiet:
                return await replay_log(client.nc, db, until_time=until_time)
            columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TextColumn("events"), TimeRemainingColumn())
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task("replay", total=None)

                def advance(position: int, last: int) -> None:
                    progress.update(task, completed=position, total=last)

                return await replay_log(client.nc, db, until_time=until_time, progress=advance)

    position = run(go())
    suffix = f" (events logged up to {until})" if until else ""
    console.print(f"replayed the log up to sequence {position} into {db}{suffix}", highlight=False)


def sql(
    statement: Annotated[str, typer.Argument(metavar="SQL", help='A query, e.g. "SELECT status, count(*) FROM works GROUP BY 1".')],
    db: Annotated[Path, typer.Option("--db", help="A replayed DuckDB file, or a directory of a Parquet export.")],
    as_json: AsJson = False,
) -> None:
    """Run a read-only SQL query on a replayed database or a Parquet export."""
    import duckdb

    if not db.exists():
        raise _fail(f"{db} does not exist (make one with `workflow replay --db {db}` or `workflow export`)", 2)
    try:
        if db.is_dir():
            con = duckdb.connect(":memory:")
            tables = sorted(db.glob("*.parquet"))
            if not tables:
                raise _fail(f"{db} holds no .parquet files", 2)
            for table in tables:
                literal = str(table).replace("'", "''")
                con.execute(f'CREATE VIEW "{table.stem}" AS SELECT * FROM read_parquet(\'{literal}\')')
        else:
            con = duckdb.connect(str(db), read_only=True)
    except duckdb.IOException as error:
        raise _fail(f"cannot open {db} read-only ({error}); the live database belongs to the projector: "
                    "query a replay or an export instead", 1) from None
    try:
        cursor = con.execute(statement)
        names = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall()
    except duckdb.Error as error:
        raise _fail(f"{type(error).__name__}: {error}".splitlines()[0], 1) from None
    finally:
        con.close()
    if as_json:
        print_json([dict(zip(names, (_plain(v) for v in row))) for row in rows])
        return
    table = Table(*names)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
        return value
    return str(value)


def _fail(message: str, code: int) -> typer.Exit:
    from workflow.cli.app import errors

    errors.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(code)


def export(
    parquet: Annotated[Path, typer.Option("--parquet", help="Directory to write works/events/checkpoint.parquet into (new).")],
    db: Annotated[Path | None, typer.Option("--db", help="Export this replayed file; default: the live projection, "
                                                           "written by the projector on its own host.")] = None,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Write the projection's tables as Parquet (for archives and analysis)."""
    if db is not None:
        import duckdb

        from workflow.results.service import export_parquet

        try:
            files = export_parquet(duckdb.connect(str(db), read_only=True), parquet.resolve())
        except (duckdb.Error, ValidationError) as error:
            raise _fail(str(error).splitlines()[0], 1) from None
    else:

        files = with_client(
            connection(nats, nats_user, password, token, creds, nkey, tls_ca),
            lambda client: client.results.export(parquet),
        )
    for path in files:
        console.print(str(path), highlight=False)


def projector(
    db: Annotated[Path, typer.Option("--db", help="The DuckDB file the projector owns (created if missing).")],
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Run the projector and the results service alone (`workflow server` runs them too)."""
    from workflow.results.service import run_projector_service

    setup_logging(log_level)
    options = connection(nats, nats_user, password, token, creds, nkey, tls_ca)
    url = options.pop("url")

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        from workflow.core.settings import nats_url

        await run_projector_service(nats_url(url), db, stop, **options)

    run(go())


def register(app: typer.Typer) -> None:
    """Add these commands to the ``workflow`` CLI."""
    for command in (ls, count, pipelines, replay, sql, export, projector):
        app.command()(command)

