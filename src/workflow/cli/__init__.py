"""The ``workflow`` command line (built in :mod:`workflow.cli.app`)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Entry point of the ``workflow`` script and of ``python -m workflow(.cli)``."""
    standard_streams_open()
    from workflow.cli.app import main as run_app

    run_app()


def standard_streams_open() -> None:
    """Put ``/dev/null`` where stdin, stdout or stderr is closed (``cmd <&-``, a daemon's
    child), before anything opens a file.

    Otherwise the first socket takes descriptor 0, 1 or 2: Python leaves ``sys.stdin`` None
    (a prompt reads nothing, the console cannot ask ``isatty``), and uvloop aborts the whole
    process (SIGABRT, "Aborted") when it closes a handle on a descriptor below 3. With
    ``/dev/null`` there, a prompt reads end-of-file and says what it did not do.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 (lives as long as the process)


__all__ = ["main"]
