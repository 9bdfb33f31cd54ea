"""The ``workflow`` command line: the Typer app, with every command module registered.

Human output by default, ``--json`` for scripts. Every command that talks to the system
takes ``--nats URL`` (or ``WORKFLOW_NATS_URL``) and the ``--nats-*`` credentials
(:mod:`workflow.cli.options`). Errors are one line on stderr and a non-zero exit code,
never a traceback (:mod:`workflow.cli.output`).
"""

from __future__ import annotations

import typer

from workflow.cli import (
    configs,
    notify,
    products,
    reading,
    running,
    scaling,
    schedules,
    secure,
    system,
    web,
    works,
    workspace,
)
from workflow.cli.repeats import RefusingRepeats


def build() -> typer.Typer:
    """A new ``workflow`` app with every command."""
    app = typer.Typer(
        name="workflow",
        cls=RefusingRepeats,
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
    for module in (system, works, running, scaling, reading, schedules, configs, secure, notify, products, workspace):
        module.register(app)
    system.register_tui(app)
    web.register(app)
    return app


app = build()


def main() -> None:
    """Entry point of the ``workflow`` script."""
    app()
