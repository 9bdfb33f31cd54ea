"""Imported by the worker's forkserver, and only there (its ``preload``).

It loads workflow's runner once, so each child forked for a work starts with it, and it
makes the forkserver ignore SIGTERM. The forkserver shares the worker's process group, so
``kill -TERM -<pgid>`` (or a supervisor that signals the whole group) would otherwise
kill it, and with it (``PR_SET_PDEATHSIG``) every running work, before the worker had a
chance to finish them gracefully. The forkserver still exits with the worker (it watches
a pipe from it), and each child restores the default SIGTERM.

Do not import this module anywhere else: it changes the signal handling of its process.
"""

import signal

import workflow.worker.runner  # noqa: F401  (preloaded for the children)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
