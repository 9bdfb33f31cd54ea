"""Running the system and looking at it: server, streams apply, tui."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from workflow.cli.options import Connection, LogLevel, MetricsHost, MetricsPort, connection_options
from workflow.cli.output import LogFormat, console, fail, reported, run, setup_logging
from workflow.core.workspace import parse_size


def server(
    port: Annotated[int, typer.Option(help="Port of the embedded nats-server (-1: any free port).")] = 4222,
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", help="Where the log (JetStream store) and DuckDB live.")] = Path("data"),
    nats: Annotated[str | None, typer.Option(
        "--nats", help="Use this NATS server or cluster instead of starting one.")] = None,
    replicas: Annotated[int | None, typer.Option(help="Stream replicas (3 on a JetStream cluster).")] = None,
    products_max_bytes: Annotated[str | None, typer.Option(
        "--products-max-bytes", envvar="WORKFLOW_PRODUCTS_MAX_BYTES",
        help="Size of the products object store, apart from the log's stream: 10GiB, 500GB, or bytes "
             "[default: 10GiB].")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", exists=True, dir_okay=False,
        help="The embedded nats-server's config [default: the repository's nats.conf]; with one from "
             "`workflow secure init DIR`, this process logs in as the server role (DIR/server.env, "
             "or WORKFLOW_NATS_USER and WORKFLOW_NATS_PASSWORD).")] = None,
    listen: Annotated[str, typer.Option(
        "--listen", help="Address the embedded nats-server listens on: 127.0.0.1 (this host only), or "
                         "0.0.0.0 for workers on other hosts; then give it roles (`workflow secure init`) "
                         "and TLS (docs/howto/roles.md).")] = "127.0.0.1",
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "0.0.0.0",
    web_port: Annotated[int | None, typer.Option(
        "--web-port", help="Serve the web UI on this port too (0: any free port). With --config "
                           "DIR/nats.conf its users are DIR/web-users; without, it has no login and "
                           "listens on 127.0.0.1 only.")] = None,
    web_host: Annotated[str, typer.Option(
        "--web-host", help="Address the web UI listens on (beyond 127.0.0.1 only with web users).")] = "127.0.0.1",
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
) -> None:
    """Run the system: the embedded nats-server (or --nats), the log, the projector and the
    results service (and the web UI with --web-port), until Ctrl-C or SIGTERM."""
    from workflow.server import serve

    setup_logging(log_level, log_format)
    if config is not None and nats is not None:
        raise fail("--config configures the embedded nats-server, which --nats replaces: give one of them", 2)
    if listen != "127.0.0.1" and nats is not None:
        raise fail("--listen is the embedded nats-server's address, which --nats replaces: give one of them", 2)
    with reported():
        max_bytes = None if products_max_bytes is None else parse_size(products_max_bytes, "products-max-bytes")
    web_users = None
    if web_port is not None:
        from workflow.web.serve import check_binding, users_of
        from workflow.web.users import USERS_FILE

        with reported():
            secured = config is not None and (config.parent / USERS_FILE).exists()
            web_users = users_of(config.parent) if config is not None and secured else None
            check_binding(web_host, web_users)
    run(serve(port=port, data_dir=data_dir, nats_url=nats, replicas=replicas, products_max_bytes=max_bytes,
              metrics_port=metrics_port, metrics_host=metrics_host, config=config, listen=listen,
              web_port=web_port, web_host=web_host, web_users=web_users))


@connection_options
def streams_apply(
    update: Annotated[bool, typer.Option("--update", help="Change an existing stream whose config differs.")] = False,
    replicas: Annotated[int | None, typer.Option(help="Override num_replicas (3 on a cluster).")] = None,
    *,
    connection: Connection,
) -> None:
    """Create the WORKFLOW stream from streams/*.json (idempotent); report a differing one."""
    from workflow.core.settings import nats_url
    from workflow.log.connection import open_connection
    from workflow.log.streams import apply_streams

    with reported():  # unreadable TLS files: one line, not a traceback
        options = connection.options()
    url = nats_url(options.pop("url"))

    async def apply() -> None:
        nc = await open_connection(url, **options)
        try:
            for applied in await apply_streams(nc, replicas=replicas, update=update):
                state = "created" if applied.created else "updated" if applied.updated else "up to date"
                console.print(f"stream {applied.name}: {state}")
        finally:
            await nc.close()

    run(apply())


def tui_argv(connection: Connection, refresh: float) -> list[str]:
    """The command line of the terminal UI that ``tui --web`` serves to each browser: this
    Python, ``workflow tui``, and every connection option this command was given (secrets
    go through the environment, which the served process inherits)."""
    return [sys.executable, "-m", "workflow.cli", "tui", "--refresh", str(refresh), *connection.argv()]


@connection_options
def tui(
    web: Annotated[bool, typer.Option(
        "--web", help="Serve the UI to browsers (textual-serve) instead of this terminal.")] = False,
    host: Annotated[str, typer.Option(help="With --web: address to listen on.")] = "localhost",
    port: Annotated[int, typer.Option(help="With --web: port to listen on.")] = 8000,
    refresh: Annotated[float, typer.Option(
        help="Seconds between safety-net reloads (the views follow the log live anyway).", min=0.2)] = 10.0,
    *,
    connection: Connection,
) -> None:
    """The operator's view, live: dashboard (d), works (w: n/b page, o sort, enter detail),
    event feed (e: events from now on, f filter); / searches the works from any view; c cancel
    (with an optional reason), R retry, p priority (each confirmed); ? help, q quit. --web
    serves the same UI at http://HOST:PORT.
    """
    if web:
        from textual_serve.server import Server

        os.environ.update(connection.secret_environment())  # textual-serve's children inherit it
        Server(shlex.join(tui_argv(connection, refresh)), host=host, port=port, title="workflow").serve()
        return
    from workflow.tui import WorkflowApp

    code = WorkflowApp(connection.options(), refresh_seconds=refresh).run()
    raise typer.Exit(code or 0)


def register(app: typer.Typer) -> None:
    """Add ``server`` and ``streams apply`` to the CLI."""
    app.command()(server)
    streams_app = typer.Typer(help="The event log's stream definitions (streams/*.json).", no_args_is_help=True)
    streams_app.command("apply")(streams_apply)
    app.add_typer(streams_app, name="streams")


def register_tui(app: typer.Typer) -> None:
    """Add ``tui`` to the CLI (last in ``--help``: the other commands come first)."""
    app.command()(tui)
