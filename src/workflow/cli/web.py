"""``workflow web``: the web UI on its own, against any NATS (URL and credentials as for
every command), next to a ``workflow server`` running elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
from pathlib import Path
from typing import Annotated

import typer

from workflow.cli.options import Connection, LogLevel, connection_options
from workflow.cli.output import reported, run, setup_logging


@connection_options
def web(
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on (beyond 127.0.0.1 only with --secure).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8080,
    secure: Annotated[Path | None, typer.Option(
        "--secure", exists=True, file_okay=False,
        help="The directory of `workflow secure init`: its web-users log in (viewer: look; operator: act), "
             "and this process logs in to NATS as its operator.env unless --nats-user is given.")] = None,
    log_level: LogLevel = "warning",
    *,
    connection: Connection,
) -> None:
    """Serve the web UI: dashboard, works search (/works?q=status:failure), each work's page,
    the live event feed, actions by role and a JSON API under /api/. Without --secure it has
    no login and listens on 127.0.0.1 only (everyone on this host is an operator)."""
    from workflow.core.roles import parse_env
    from workflow.web.serve import check_binding, serve_web, users_of

    setup_logging(log_level, "text")
    with reported():
        users = users_of(secure)
        check_binding(host, users)
        options = connection.options()
    if secure is not None and "user" not in options and (secure / "operator.env").exists():
        values = parse_env((secure / "operator.env").read_text())
        options.update(user=values.get("WORKFLOW_NATS_USER"), password=values.get("WORKFLOW_NATS_PASSWORD"))

    async def go() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await serve_web(options, stop, host=host, port=port, users=users, local_user=getpass.getuser())

    run(go())


def register(app: typer.Typer) -> None:
    """Add ``web`` to the CLI."""
    app.command()(web)
