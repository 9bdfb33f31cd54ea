"""``workflow run``: a worker in this process."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from workflow.cli.options import Connection, LogLevel, MetricsHost, MetricsPort, connection_options
from workflow.cli.output import LogFormat, reported, setup_logging
from workflow.cli.workspace import chosen
from workflow.core.workspace import Workspace

# The withdraw filters (core.filters), shown in a panel of their own by --help.
TagFilter = Annotated[list[str] | None, typer.Option(
    "--tag", "-t", help="Take only works with this tag (repeatable: any of them).", rich_help_panel="Filters")]
EventFilter = Annotated[list[int] | None, typer.Option(
    "--event", "-e", help="Take only works naming this telescope event (repeatable: any of them).",
    rich_help_panel="Filters")]
UserFilter = Annotated[str | None, typer.Option(
    "--user", "-u", help="Take only works of this user.", rich_help_panel="Filters")]
ParentFilter = Annotated[str | None, typer.Option(
    "--parent", "-p", help="Take only works whose config names this parent.", rich_help_panel="Filters")]


@connection_options
def run(
    buckets: Annotated[list[str], typer.Argument(
        metavar="BUCKET...", help="Pipelines to take work from (highest priority first). "
        "A last argument with dots (module.function) is taken as --function, as in the old CLI.")],
    site: Annotated[str, typer.Option("--site", "-s", help="The site this worker runs at.")] = "local",
    function: Annotated[str | None, typer.Option("--function", "-f", help="Dotted path of the function to call for "
                                                 "every work [default: each work's own function].")] = None,
    command: Annotated[str | None, typer.Option("--command", "-c", help="Command line to run for every work "
                                                "[default: each work's own command].")] = None,
    argsource: Annotated[str, typer.Option(
        "--argsource", help="What a function receives: parameters (function(**work.parameters)) or work "
        "(function(work), the whole Work: its event, tags, path...).")] = "parameters",
    lives: Annotated[int, typer.Option("--lives", "-l", help="Stop after this many works (-1: never).")] = -1,
    sleep: Annotated[float, typer.Option(help="Seconds to wait when the buckets are empty (1 to 300).")] = 30.0,
    concurrency: Annotated[int, typer.Option(help="Works run at once by this worker.")] = 1,
    isolation: Annotated[str, typer.Option(
        help="process (killable child, default), thread, or none (main thread).")] = "process",
    max_works_per_child: Annotated[int | None, typer.Option(
        "--max-works-per-child", help="Process isolation: replace a child process after this many works "
        "[default: reuse it until it times out, is cancelled or dies].")] = None,
    tag: TagFilter = None,
    event: EventFilter = None,
    user: UserFilter = None,
    parent: ParentFilter = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "0.0.0.0",
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    workspace: Annotated[Path | None, typer.Option(
        "--workspace", "-w", help="Workspace YAML file: the site's NATS URLs and archive settings "
        "[default: the one `workflow workspace set` made active, if any].")] = None,
    *,
    connection: Connection,
) -> None:
    """Run works: withdraw from BUCKETs, call function(**parameters) (or run the command),
    record every attempt. SIGTERM/Ctrl-C finishes the running works and exits; a second
    one gives them back at once.

    Example: workflow run sample-pipeline --function workflow.examples.add

    Filters take only matching works, as the old system did: every filter given must
    hold, and a repeated --tag or --event matches a work with any of them. Other works
    stay queued, in order, for other workers. A filtered worker finds works through the
    results service (it runs in `workflow server`).

    Example: workflow run sample-pipeline --tag calibration --tag beam-2 -f mymod.calibrate

    Example: workflow run sample-pipeline --event 12345 --user ann --parent night-2026-11-30

    A function that is a click command gets the work's parameters as its command-line
    arguments; --argsource work hands a function the whole Work instead of **parameters.
    After each attempt the files its function returned (products, plots) are archived
    into the storage the workspace names for this --site (default: the object store on
    the system's NATS); WORKFLOW_ARCHIVE_* variables override the workspace.
    """
    from workflow.api import Client
    from workflow.core.filters import WithdrawFilter
    from workflow.worker.loop import WorkerConfig, run_worker

    if len(buckets) > 1 and "." in buckets[-1] and function is None:
        *buckets, function = buckets
    setup_logging(log_level, log_format)
    with reported():  # bad options exit 2 and a lost server 3, as every command reports them
        site_config = chosen(workspace)
        connect = connection.options()
        if site_config is not None:
            site_config.check_site(site)
            connect["url"] = connect["url"] or site_config.nats_url()
        archive = (site_config or Workspace(name="default")).archive_for(site, os.environ)
        config = WorkerConfig(
            pipelines=buckets, site=site, function=function, command=shlex.split(command) if command else None,
            argsource=argsource,
            lives=lives, sleep=sleep, concurrency=concurrency, isolation=isolation,
            max_works_per_child=max_works_per_child, connect=connect,
            filters=WithdrawFilter.of(tag, event, user, parent), archive=archive,
        ).check()
        if metrics_port is not None:
            from workflow.worker import metrics

            metrics.serve(metrics_port, metrics_host)
            metrics.slots(busy=0, free=concurrency)
        code = run_worker(config, Client)  # runs its own event loop (in a second thread for --isolation none)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``workflow run`` to the CLI."""
    app.command("run")(run)
