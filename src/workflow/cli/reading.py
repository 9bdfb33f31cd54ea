"""Commands over the projection: ls, count, pipelines, replay, sql, export, audit, projector.

``ls``, ``count`` and ``pipelines`` ask the results service (nobody opens the live
database behind the projector's back). ``replay`` builds a database file of one's own
from the log; ``sql`` queries such a file (or a Parquet export) read-only.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

import workflow
from workflow.cli.options import (
    AsJson,
    Connection,
    Fresh,
    LogLevel,
    MetricsHost,
    MetricsPort,
    WorkFilters,
    as_filter,
    connection_options,
    work_filters,
)
from workflow.cli.output import LogFormat, console, fail, listing, print_json, run, setup_logging, with_client
from workflow.core.display import waits_of, when
from workflow.core.errors import ValidationError
from workflow.core.status import LOGGED
from workflow.core.work import Work

#: From this many columns on, ``ls`` shows every column (site, stop time, user) with full times.
WIDE_LS = 140


@connection_options
@work_filters
def ls(
    *,
    filters: WorkFilters,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many works.")] = 20,
    offset: Annotated[int, typer.Option(help="Skip this many works first.")] = 0,
    order: Annotated[str, typer.Option(help="Order by a column, '-' prefix for descending.")] = "-creation",
    fresh: Fresh = True,
    as_json: AsJson = False,
    connection: Connection,
) -> None:
    """List works (newest first), from the results service."""
    works = cast(list[Work], with_client(connection, lambda client: client.results.query(  # no `fields`: Works
        as_filter(filters), limit=limit, offset=offset, order=order, fresh=fresh,
    )))
    if as_json:
        print_json([work.payload for work in works])
        return
    wide = console.width >= WIDE_LS
    if wide:
        table = listing("id", "pipeline", "status", "site", "prio", "attempt", "created (UTC)", "stopped (UTC)", "user")
    else:  # 80 columns: what tells works apart; show ID (or a wider terminal) has the rest
        table = listing("id", "pipeline", "status", "pri", "att", "created (UTC)")
    for column in table.columns:  # ids, numbers and times whole; names and statuses wrap
        column.no_wrap = column.header not in ("pipeline", "status", "user")
    for work in works:
        status = f"waiting ({waits_of(work)})" if work.status == "waiting" else work.status
        if wide:
            table.add_row(work.id, work.pipeline, status, work.site, str(work.priority), str(work.attempt),
                          when(work.creation), when(work.stop), work.user or "")
        else:
            table.add_row(work.id, work.pipeline, status, str(work.priority), str(work.attempt),
                          short_time(work.creation))
    console.print(table)


def short_time(timestamp: float | None) -> str:
    """``12-06 02:10:33`` (UTC, no year): a time in a narrow table, as the TUI shows it."""
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC).strftime("%m-%d %H:%M:%S")


@connection_options
@work_filters
def count(*, filters: WorkFilters, fresh: Fresh = True, as_json: AsJson = False, connection: Connection) -> None:
    """How many works match, from the results service."""
    total = with_client(connection, lambda client: client.results.count(as_filter(filters), fresh=fresh))
    if as_json:
        print_json({"count": total})
    else:
        console.print(str(total), highlight=False)


@connection_options
def pipelines(fresh: Fresh = True, as_json: AsJson = False, *, connection: Connection) -> None:
    """Every pipeline with its number of works in each status."""
    found = with_client(connection, lambda client: client.results.pipelines(fresh=fresh))
    if as_json:
        print_json(found)
        return
    columns = ("total", *LOGGED)
    table = listing("pipeline", *columns)
    for name, counts in found.items():
        table.add_row(name, *(str(counts[c]) for c in columns))
    console.print(table)


@connection_options
def replay(
    db: Annotated[Path, typer.Option("--db", help="The new DuckDB file to build (must not exist).")],
    until: Annotated[str | None, typer.Option(
        help="Stop at this ISO time: the state of every work at that moment. A time without a zone "
             "(2026-12-06T02:10:00) is UTC; name one to mean another (…+01:00).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    *,
    connection: Connection,
) -> None:
    """Build a fresh DuckDB from the log (from sequence 1), for audits and analysis."""
    from workflow.core.filters import as_unix
    from workflow.log.jsapi import first_time
    from workflow.results.projector import check_replay
    from workflow.results.projector import replay as replay_log

    first_event: float | None = None

    async def go() -> int:
        nonlocal first_event
        until_time = as_unix(until, "until")
        async with workflow.connect(**connection.options()) as client:
            await check_replay(client.nc, db, until_time)  # refused before any progress bar shows
            first_event = await first_time(client.nc)
            before_the_log = until_time is not None and first_event is not None and until_time < first_event
            if quiet or before_the_log:  # no bar for nothing to replay: the line after says why
                return await replay_log(client.nc, db, until_time=until_time)
            columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                       TimeRemainingColumn())
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task("replay", total=None)

                def advance(position: int, last: int) -> None:
                    progress.update(task, completed=position, total=last)

                return await replay_log(client.nc, db, until_time=until_time, progress=advance)

    position = run(go())
    if until is None:
        console.print(f"replayed the log up to sequence {position} into {db}", highlight=False)
        return
    until_time = as_unix(until, "until") or 0.0
    naive = datetime.fromisoformat(until.replace("Z", "+00:00")).tzinfo is None  # as_unix read it
    zone = f" ({until} has no zone: read as UTC)" if naive else ""
    if first_event is not None and until_time < first_event:
        console.print(f"nothing replayed: {when(until_time)}{zone} is before the log's first event "
                      f"({when(first_event)}); {db} holds no works (none existed yet)", highlight=False)
        return
    console.print(f"replayed the log up to sequence {position} into {db}: the state at {when(until_time)}{zone}",
                  highlight=False)


def sql(
    statement: Annotated[str, typer.Argument(
        metavar="SQL", help='A query, e.g. "SELECT status, count(*) FROM works GROUP BY 1".')],
    db: Annotated[Path, typer.Option("--db", help="A replayed DuckDB file, or a directory of a Parquet export.")],
    as_json: AsJson = False,
) -> None:
    """Run a read-only SQL query on a replayed database or a Parquet export."""
    import duckdb

    if not db.exists():
        raise fail(f"{db} does not exist (make one with `workflow replay --db {db}` or `workflow export`)", 2)
    try:
        if db.is_dir():
            con = duckdb.connect(":memory:")
            tables = sorted(db.glob("*.parquet"))
            if not tables:
                raise fail(f"{db} holds no .parquet files", 2)
            for file in tables:
                literal = str(file).replace("'", "''")
                con.execute(f'CREATE VIEW "{file.stem}" AS SELECT * FROM read_parquet(\'{literal}\')')
        else:
            con = duckdb.connect(str(db), read_only=True)
    except duckdb.IOException as error:
        raise fail(f"cannot open {db} read-only ({error}); the live database belongs to the projector: "
                   "query a replay or an export instead", 1) from None
    try:
        cursor = con.execute(statement)
        names = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall()
    except duckdb.Error as error:
        raise fail(f"{type(error).__name__}: {error}".splitlines()[0], 1) from None
    finally:
        con.close()
    if as_json:
        print_json([dict(zip(names, (_plain(v) for v in row), strict=True)) for row in rows])
        return
    table = Table(*names)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
        return value
    return str(value)


@connection_options
def export(
    directory: Annotated[Path | None, typer.Argument(
        metavar="DIR", help="Directory to write works/events/rejected/checkpoint.parquet into, "
                            "on this machine (new files only).", show_default=False)] = None,
    parquet: Annotated[Path | None, typer.Option("--parquet", help="Same as DIR (the older spelling).")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="Export this replayed file; default: the live "
                                                           "projection, streamed from the results service.")] = None,
    *,
    connection: Connection,
) -> None:
    """Write the projection's tables as Parquet files here (for archives and analysis)."""
    target = directory or parquet
    if target is None:
        raise fail("give the directory to export into: workflow export DIR", 2)
    if db is not None:
        import duckdb

        from workflow.results.export import write_parquet

        try:
            files = write_parquet(duckdb.connect(str(db), read_only=True), target.resolve())
        except ValidationError as error:
            raise fail(str(error), 2) from None
        except duckdb.Error as error:
            raise fail(str(error).splitlines()[0], 1) from None
    else:
        from workflow.results.export import download

        _, files = with_client(connection, lambda client: download(client.nc, target.resolve()))
    for path in files:
        console.print(str(path), highlight=False)


@connection_options
def audit(
    as_json: AsJson = False,
    products: Annotated[bool, typer.Option(
        "--products", help="Check the archive against the log instead: objects no event records (orphans), "
        "recorded files missing or whose sha256 differs (reads every archived file).")] = False,
    *, connection: Connection,
) -> None:
    """Check the log against the projection: rejected messages, overdue works, attempts
    past retries, rows that differ from the fold of their events, sequence gaps,
    notifications the server gave up on. Exit code 0 when clean, 1 when anything is found."""
    if products:
        _audit_products(as_json, connection)
        return

    async def ask(client: workflow.Client) -> dict[str, Any]:
        from workflow.results.client import Results

        results: Results = client.results
        return await results.audit(fresh=True)

    answer = with_client(connection, ask)
    anomalies = answer["anomalies"]
    if as_json:
        print_json(answer)
    elif not anomalies:
        console.print(f"clean: no anomaly up to sequence {answer['seq']}", highlight=False)
    else:
        table = Table("kind", "seq", "work", "detail")
        for found in anomalies:
            table.add_row(found["kind"], str(found.get("seq") or ""), found.get("work_id") or "", found["detail"])
        console.print(table)
        more = f" (the first {len(anomalies)} shown)" if answer["total"] > len(anomalies) else ""
        console.print(f"{answer['total']} anomalies up to sequence {answer['seq']}{more}", highlight=False)
    if answer["total"]:
        raise typer.Exit(1)


def _audit_products(as_json: bool, connection: Connection) -> None:
    from workflow.archive.audit import ProductsAudit, audit_products

    found: ProductsAudit = with_client(connection, lambda client: audit_products(client.nc))
    if as_json:
        print_json({"anomalies": found.anomalies, "checked": found.checked, "skipped": found.skipped})
    elif not found.anomalies:
        console.print(f"clean: {found.checked} archived files match the log"
                      + (f" ({found.skipped} on mounts not present here, not checked)" if found.skipped else ""),
                      highlight=False)
    else:
        table = Table("kind", "work", "uri", "detail")
        for anomaly in found.anomalies:
            table.add_row(anomaly["kind"], anomaly["work_id"], anomaly["uri"], anomaly["detail"])
        console.print(table)
        console.print(f"{len(found.anomalies)} anomalies; {found.checked} archived files checked", highlight=False)
    if found.anomalies:
        raise typer.Exit(1)


@connection_options
def projector(
    db: Annotated[Path, typer.Option("--db", help="The DuckDB file the projector owns (created if missing).")],
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "0.0.0.0",
    *,
    connection: Connection,
) -> None:
    """Run the projector and the results service alone (`workflow server` runs them too)."""
    from workflow.core.settings import nats_url
    from workflow.results.service import run_projector_service

    setup_logging(log_level, log_format)
    options = connection.options()
    url = nats_url(options.pop("url"))

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if metrics_port is None:
            await run_projector_service(url, db, stop, **options)
            return
        from workflow.results.metrics import run_metrics

        metrics = asyncio.create_task(run_metrics(url, metrics_port, stop, host=metrics_host, **options))
        try:
            await run_projector_service(url, db, stop, **options)
        finally:
            stop.set()
            await metrics

    run(go())


def register(app: typer.Typer) -> None:
    """Add these commands to the ``workflow`` CLI."""
    for command in (ls, count, pipelines, replay, sql, export, audit, projector):
        app.command()(command)
