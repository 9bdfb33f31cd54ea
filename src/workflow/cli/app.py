"""The ``workflow`` command line.

Human output by default, ``--json`` for scripts. Every command that talks to the system
takes ``--nats URL`` (or ``WORKFLOW_NATS_URL``) and NATS credentials. Errors are one line
on stderr and a non-zero exit code, never a traceback: 1 for a refused operation, 2 for
bad input, 3 when no server is reachable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import nats.errors
import typer
from rich.console import Console
from rich.table import Table

import workflow
from workflow.core.display import describe, when
from workflow.core.errors import ConnectionFailedError, NotFoundError, ValidationError, WorkflowError

app = typer.Typer(
    name="workflow",
    help=(
        "CHIME/FRB workflow: deposit work, run it anywhere, and ask at any time what each "
        "work is, what it returned, and how it got there.\n\n"
        "Start the system with `workflow server`, deposit with `workflow deposit`, run "
        "workers with `workflow run`, and look with `workflow ls`, `show` and `history`."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
streams_app = typer.Typer(help="The event log's stream definitions (streams/*.json).", no_args_is_help=True)
app.add_typer(streams_app, name="streams")

# Piped output is read by people too (less, grep): don't squeeze tables into 80 columns.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200)
errors = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

# -- connection options shared by every command --------------------------------------

NatsUrl = Annotated[
    str | None,
    typer.Option("--nats", envvar="WORKFLOW_NATS_URL", help="NATS server URL [default: nats://127.0.0.1:4222]."),
]
User = Annotated[str | None, typer.Option("--user", envvar="WORKFLOW_NATS_USER", help="NATS user name.")]
Password = Annotated[str | None, typer.Option("--password", envvar="WORKFLOW_NATS_PASSWORD", help="NATS password.")]
Token = Annotated[str | None, typer.Option("--token", envvar="WORKFLOW_NATS_TOKEN", help="NATS auth token.")]
Creds = Annotated[Path | None, typer.Option("--creds", envvar="WORKFLOW_NATS_CREDS", help="NATS credentials file.")]
NKey = Annotated[Path | None, typer.Option("--nkey", envvar="WORKFLOW_NATS_NKEY", help="NATS nkey seed file.")]
TlsCa = Annotated[Path | None, typer.Option("--tls-ca", envvar="WORKFLOW_NATS_TLS_CA", help="CA bundle to verify the server.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def connection(
    nats: str | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    creds: Path | None = None,
    nkey: Path | None = None,
    tls_ca: Path | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``workflow.connect`` from the CLI's connection options."""
    options: dict[str, Any] = {"url": nats}
    if user:
        options["user"] = user
    if password:
        options["password"] = password
    if token:
        options["token"] = token
    if creds:
        options["user_credentials"] = str(creds)
    if nkey:
        options["nkeys_seed"] = str(nkey)
    if tls_ca:
        options["tls"] = ssl.create_default_context(cafile=str(tls_ca))
    return options


def run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; turn workflow errors into one clear line and an exit code."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except ConnectionFailedError as error:
        errors.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(3) from None
    except ValidationError as error:
        errors.print(f"error: invalid {error}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except (WorkflowError, NotFoundError) as error:
        errors.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except (nats.errors.Error, asyncio.TimeoutError) as error:
        errors.print(
            f"error: the NATS server stopped answering ({type(error).__name__}: {error}); "
            "nothing was lost: the log keeps what was recorded, try again when it is back",
            markup=False, highlight=False,
        )
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def with_client(options: dict[str, Any], action: Callable[[workflow.Client], Awaitable[T]]) -> T:
    """Connect with ``options``, await ``action(client)``, disconnect: one command's work,
    with errors turned into one line and an exit code by :func:`run`."""

    async def go() -> T:
        async with workflow.connect(**options) as client:
            return await action(client)

    return run(go())


def print_json(data: Any) -> None:
    sys.stdout.write(msgspec.json.encode(data).decode() + "\n")


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses (1, 2.5, true, [1,2]), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected key=value, got {text!r}", param_hint="--param")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- commands ---------------------------------------------------------------------------


@app.command()
def server(
    port: Annotated[int, typer.Option(help="Port of the embedded nats-server (-1: any free port).")] = 4222,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the log (JetStream store) and DuckDB live.")] = Path("data"),
    nats: Annotated[str | None, typer.Option("--nats", help="Use this NATS server or cluster instead of starting one.")] = None,
    replicas: Annotated[int | None, typer.Option(help="Stream replicas (3 on a JetStream cluster).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the system: the embedded nats-server (or --nats), the log, the projector and the
    results service, until Ctrl-C or SIGTERM."""
    from workflow.server import serve

    setup_logging(log_level)
    run(serve(port=port, data_dir=data_dir, nats_url=nats, replicas=replicas))


@streams_app.command("apply")
def streams_apply(
    nats: NatsUrl = None,
    update: Annotated[bool, typer.Option("--update", help="Change an existing stream whose config differs.")] = False,
    replicas: Annotated[int | None, typer.Option(help="Override num_replicas (3 on a cluster).")] = None,
) -> None:
    """Create the WORKFLOW stream from streams/*.json (idempotent); report a differing one."""
    import nats as nats_py

    from workflow.core.settings import nats_url
    from workflow.log.streams import apply_streams

    async def apply() -> None:
        url = nats_url(nats)
        try:
            nc = await nats_py.connect(servers=[url], connect_timeout=2, max_reconnect_attempts=0)
        except Exception as error:
            raise ConnectionFailedError(f"cannot reach NATS at {url} ({error}); start one with `workflow server`") from None
        try:
            for applied in await apply_streams(nc, replicas=replicas, update=update):
                state = "created" if applied.created else "updated" if applied.updated else "up to date"
                console.print(f"stream {applied.name}: {state}")
        finally:
            await nc.close()

    run(apply())


@app.command()
def deposit(
    pipeline: Annotated[str, typer.Argument(help="Pipeline name (letters, digits and '-').")],
    param: Annotated[list[str] | None, typer.Option("--param", "-P", help="key=value, repeatable; values are JSON when they parse.")] = None,
    priority: Annotated[int, typer.Option(help="1 to 5; 5 runs first.")] = 3,
    site: Annotated[str, typer.Option(help="Where it may run (chime, kko, gbo, ..., local).")] = "local",
    function: Annotated[str | None, typer.Option(help="Dotted path of the function to run.")] = None,
    command: Annotated[str | None, typer.Option(help="A command line to run instead of a function.")] = None,
    timeout: Annotated[int, typer.Option(help="Seconds an attempt may run (1 to 259200).")] = 3600,
    retries: Annotated[int, typer.Option(help="Retries after a failed attempt (0 to 5).")] = 2,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Label, repeatable.")] = None,
    event: Annotated[list[int] | None, typer.Option("--event", "-e", help="Telescope event number, repeatable.")] = None,
    user: Annotated[str | None, typer.Option(help="Who asked.")] = None,
    count: Annotated[int, typer.Option(help="Deposit this many identical works.", min=1)] = 1,
    as_json: AsJson = False,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Deposit work into its bucket; prints the new ids.

    Example: workflow deposit sample-pipeline --param a=1 --param b=2 --priority 5
    """
    parameters = dict(parse_param(p) for p in param or []) or None

    try:
        works = [
            workflow.Work(
                pipeline=pipeline, parameters=parameters, priority=priority, site=site, function=function,
                command=shlex.split(command) if command else None, timeout=timeout, retries=retries,
                tags=tag or None, event=event or None, user=user,
            )
            for _ in range(count)
        ]
    except ValidationError as error:
        errors.print(f"error: invalid {error}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    ids = with_client(connection(nats, nats_user, password, token, creds, nkey, tls_ca), lambda client: client.deposit(works))
    if as_json:
        print_json(ids)
    else:
        for work_id in ids:
            console.print(work_id, highlight=False)


@app.command()
def cancel(
    work_id: Annotated[str, typer.Argument(metavar="ID", help="The work's id.")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the history).")] = None,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Cancel a work: a queued work never runs; a running one is stopped at its next heartbeat."""

    with_client(
        connection(nats, nats_user, password, token, creds, nkey, tls_ca),
        lambda client: client.cancel(work_id, reason=reason),
    )
    console.print(f"cancelled {work_id}", highlight=False)


@app.command()
def requeue(
    work_id: Annotated[str, typer.Argument(metavar="ID", help="The work's id.")],
    priority: Annotated[int | None, typer.Option(help="New priority (1 to 5).")] = None,
    site: Annotated[str | None, typer.Option(help="New site.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (recorded in the history).")] = None,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Put a queued or finished work (back) in a bucket: re-prioritise, move, or retry it."""

    work = with_client(
        connection(nats, nats_user, password, token, creds, nkey, tls_ca),
        lambda client: client.requeue(work_id, priority=priority, site=site, reason=reason),
    )
    console.print(f"requeued {work_id} (priority {work.priority}, site {work.site})", highlight=False)


@app.command()
def buckets(
    as_json: AsJson = False,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Every bucket (pipeline, site, priority) with its waiting and held works, live from NATS."""

    stats = with_client(
        connection(nats, nats_user, password, token, creds, nkey, tls_ca),
        lambda client: client.buckets(),
    )
    if as_json:
        print_json(stats)
        return
    table = Table("pipeline", "site", "priority", "waiting", "held", "redelivered", "lease (s)")
    for s in stats:
        table.add_row(s.pipeline, s.site, str(s.priority), str(s.waiting), str(s.held), str(s.redelivered),
                      f"{s.lease_seconds:g}")
    console.print(table if stats else "no buckets yet: deposit some work")


@app.command()
def show(
    work_id: Annotated[str, typer.Argument(metavar="ID", help="The work's id.")],
    as_json: AsJson = False,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Show one work as it is now (folded from its events in the log)."""

    work = with_client(
        connection(nats, nats_user, password, token, creds, nkey, tls_ca),
        lambda client: client.get(work_id),
    )
    if as_json:
        print_json(work.payload)
        return
    table = Table(show_header=False, box=None)
    for key, value in work.payload.items():
        if key in ("creation", "start", "stop"):
            value = when(value)
        table.add_row(key, "-" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


@app.command()
def history(
    work_id: Annotated[str, typer.Argument(metavar="ID", help="The work's id.")],
    as_json: AsJson = False,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """The timeline of one work: every event, with time, attempt and who recorded it."""

    records = with_client(
        connection(nats, nats_user, password, token, creds, nkey, tls_ca),
        lambda client: client.history_records(work_id),
    )
    if not records:
        errors.print(f"error: no work with id {work_id}", markup=False, highlight=False)
        raise typer.Exit(1)
    if as_json:
        print_json([{"seq": r.seq, "subject": r.subject, "event": r.event} for r in records])
        return
    table = Table("seq", "time (UTC)", "event", "attempt", "by", "what")
    for r in records:
        table.add_row(
            str(r.seq), when(r.event.time), type(r.event).__name__, str(getattr(r.event, "attempt", "")),
            r.event.by or "", describe(r.event),
        )
    console.print(table)


@app.command("run")
def run_command(
    buckets: Annotated[list[str], typer.Argument(
        metavar="BUCKET...", help="Pipelines to take work from (highest priority first). "
        "A last argument with dots (module.function) is taken as --function, as in the old CLI.")],
    site: Annotated[str, typer.Option("--site", "-s", help="The site this worker runs at.")] = "local",
    function: Annotated[str | None, typer.Option("--function", "-f", help="Dotted path of the function to call for "
                                                 "every work [default: each work's own function].")] = None,
    command: Annotated[str | None, typer.Option("--command", "-c", help="Command line to run for every work "
                                                "[default: each work's own command].")] = None,
    lives: Annotated[int, typer.Option("--lives", "-l", help="Stop after this many works (-1: never).")] = -1,
    sleep: Annotated[float, typer.Option(help="Seconds to wait when the buckets are empty (1 to 300).")] = 30.0,
    concurrency: Annotated[int, typer.Option(help="Works run at once by this worker.")] = 1,
    isolation: Annotated[str, typer.Option(help="process (killable child, default), thread, or none (main thread).")] = "process",
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """Run works: withdraw from BUCKETs, call function(**parameters) (or run the command),
    record every attempt. SIGTERM/Ctrl-C finishes the running works and exits; a second
    one gives them back at once.

    Example: workflow run sample-pipeline --function workflow.examples.add
    """
    from workflow.worker.loop import WorkerConfig, run_worker

    if len(buckets) > 1 and "." in buckets[-1] and function is None:
        *buckets, function = buckets
    setup_logging(log_level)

    async def check() -> None:  # validation errors and exit codes as every command reports them
        WorkerConfig(
            pipelines=buckets, site=site, function=function, command=shlex.split(command) if command else None,
            lives=lives, sleep=sleep, concurrency=concurrency, isolation=isolation,
        ).check()

    run(check())
    config = WorkerConfig(
        pipelines=buckets, site=site, function=function, command=shlex.split(command) if command else None,
        lives=lives, sleep=sleep, concurrency=concurrency, isolation=isolation,
        connect=connection(nats, nats_user, password, token, creds, nkey, tls_ca),
    )
    try:
        code = run_worker(config)  # runs its own event loop (in a second thread for --isolation none)
    except ConnectionFailedError as error:
        errors.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(3) from None
    except WorkflowError as error:
        errors.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


if __name__ != "__main__":  # run as a script, the imported module below registers them
    from workflow.cli.results import register as _register_results  # noqa: E402 - needs the helpers above

    _register_results(app)


@app.command()
def tui(
    web: Annotated[bool, typer.Option("--web", help="Serve the UI to browsers (textual-serve) instead of this terminal.")] = False,
    host: Annotated[str, typer.Option(help="With --web: address to listen on.")] = "localhost",
    port: Annotated[int, typer.Option(help="With --web: port to listen on.")] = 8000,
    refresh: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.2)] = 2.0,
    nats: NatsUrl = None, nats_user: User = None, password: Password = None, token: Token = None,
    creds: Creds = None, nkey: NKey = None, tls_ca: TlsCa = None,
) -> None:
    """The operator's view: pipelines and their counts, their works, each work's history.

    Keys: arrows to move, s to filter by status, c to cancel the highlighted work, r to
    refresh, q to quit. --web serves the same UI at http://HOST:PORT.
    """
    options = connection(nats, nats_user, password, token, creds, nkey, tls_ca)
    if web:
        from textual_serve.server import Server

        argv = [sys.executable, "-m", "workflow.cli", "tui", "--refresh", str(refresh)]
        if options.get("url"):
            argv += ["--nats", options["url"]]
        Server(shlex.join(argv), host=host, port=port, title="workflow").serve()
        return
    from workflow.tui import WorkflowApp

    code = WorkflowApp(options, refresh_seconds=refresh).run()
    raise typer.Exit(code or 0)


def main() -> None:
    """Entry point of the ``workflow`` script."""
    app()
