"""Imported by the worker's forkserver, and only there (its ``preload``).

It loads workflow's runner once, so each child forked for a work starts with it, and it
makes the forkserver ignore SIGTERM. The forkserver shares the worker's process group, so
``kill -TERM -<pgid>`` (or a supervisor that signals the whole group) would otherwise
kill it, and with it (``PR_SET_PDEATHSIG``) every running work, before the worker had a
chance to finish them gracefully. The forkserver still exits with the worker (it watches
a pipe from it), and each child restores the default SIGTERM.

The worker starts the forkserver with SIGTERM and SIGINT blocked (see
``pool._with_stop_signals_blocked``), so a group signal sent while this interpreter was
still starting is pending, not fatal: it is ignored here (which discards it) before the
two are unblocked, and before the slow import. SIGINT is ignored by the forkserver anyway
(multiprocessing does it right after this preload); each child restores both.

Do not import this module anywhere else: it changes the signal handling of its process.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

import workflow.worker.runner  # noqa: E402, F401  (preloaded for the children)
