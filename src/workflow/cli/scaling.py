"""``workflow scale``: worker jobs on Slurm that follow the buckets' depth."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from workflow.cli.options import AsJson, Connection, LogLevel, connection_options
from workflow.cli.output import LogFormat, console, print_json, reported, run, setup_logging


@connection_options
def scale(
    config_path: Annotated[Path, typer.Argument(
        metavar="CONFIG", help="A YAML file with a `scale:` section (see docs/howto/slurm.md).")],
    once: Annotated[bool, typer.Option(
        "--once", help="Look and act once, print what was decided, and exit.")] = False,
    as_json: AsJson = False,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    *,
    connection: Connection,
) -> None:
    """Submit and cancel worker jobs on Slurm as the buckets fill and empty: job arrays of
    `workflow run PIPELINE --lives N`, between each pipeline's min and max, cancelled after
    the idle time. Run it where sbatch works (a login node), one per cluster; restarting it
    is safe: it reads the jobs it owns back from Slurm.

    Example: workflow scale scale.yaml --nats nats://telescope.example.org:4222
    """
    from workflow.followers.scale_config import load
    from workflow.followers.scaler import Scaler, run_scaler
    from workflow.followers.slurm import Slurm
    from workflow.log.client import Client

    setup_logging(log_level, log_format)
    with reported():
        config = load(config_path)
        options = connection.options()
    os.environ.update(connection.secret_environment())  # the jobs inherit them (sbatch exports the environment)

    if once:
        async def look_once() -> None:
            url = options.pop("url", None)
            async with Client(url, name="workflow-scale", **options) as client:
                steps = await Scaler(config, client, Slurm(config.name), url=config.nats or client.url).look()
            rows: list[dict[str, Any]] = [
                {"pipeline": s.pipeline, "waiting": s.depth.waiting, "held": s.depth.held, "jobs": s.jobs,
                 "submitted": s.decision.submit, "array": s.submitted, "cancelled": list(s.decision.cancel),
                 "why": s.decision.why} for s in steps]
            if as_json:
                print_json(rows)
                return
            for row in rows:
                console.print(f"{row['pipeline']}: {row['waiting']} waiting, {row['held']} held, {row['jobs']} job(s); "
                              f"submitted {row['submitted']}, cancelled {len(row['cancelled'])}"
                              + (f" ({row['why']})" if row["why"] else ""))

        run(look_once())
        return

    async def scale_until_stopped() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await run_scaler(config, stop, **options)

    run(scale_until_stopped())


def register(app: typer.Typer) -> None:
    """Add ``workflow scale`` to the CLI."""
    app.command("scale")(scale)
