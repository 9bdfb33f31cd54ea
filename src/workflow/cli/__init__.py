"""The ``workflow`` command line (built in :mod:`workflow.cli.app`)."""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``workflow`` script and of ``python -m workflow(.cli)``."""
    from workflow.cli.app import main as run_app

    run_app()


__all__ = ["main"]
