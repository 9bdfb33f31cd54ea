"""How a worker is told to stop: the first SIGTERM/SIGINT finishes the running works, a
second gives them back at once (exit 128 + the signal number).

Signals arrive in the main thread, but the worker's event loop may run in another one
(``none`` isolation keeps the main thread for the works), and may not be running yet;
:class:`Shutdown` turns them into two asyncio events on whichever loop runs the worker,
and remembers any that came before it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator

log = logging.getLogger("workflow.worker")

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """The two steps of stopping: ``stop`` (take no more works), then ``abort`` (give the
    running ones back now). ``exit_code`` is 128 + the signal once aborted, else 0."""

    def __init__(self) -> None:
        # asyncio events bind to the loop on first use (Python 3.10+), so they can be made here.
        self.stop = asyncio.Event()
        self.abort = asyncio.Event()
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._early: list[int] = []

    def signal(self, signum: int) -> None:
        """Called from a signal handler, in any thread: first stop gracefully, then at once."""
        loop = self._loop
        if loop is None:
            self._early.append(signum)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has just closed: nothing left to stop
                loop.call_soon_threadsafe(self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            log.info("%s: finishing the running works, taking no more (signal again to stop at once)", name)
            self.stop.set()
        elif not self.abort.is_set():
            log.warning("%s again: stopping the running works now and giving them back", name)
            self.exit_code = 128 + signum
            self.abort.set()

    @contextlib.asynccontextmanager
    async def handling(self) -> AsyncIterator[None]:
        """Deliver signals to the running loop while inside.

        In the main thread the loop's own handlers take them (they wake it at once, through
        its wakeup fd); in another thread they are blocked here, so the main thread (which
        runs the works in ``none`` isolation) receives them and forwards them.
        """
        self._loop = loop = asyncio.get_running_loop()
        in_main_thread = threading.current_thread() is threading.main_thread()
        handled = HANDLED if in_main_thread else ()
        for signum in handled:
            loop.add_signal_handler(signum, self._on_signal, signum)
        if not in_main_thread:
            signal.pthread_sigmask(signal.SIG_BLOCK, set(HANDLED))
        for early in self._early:
            self._on_signal(early)
        try:
            yield
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)


@contextlib.contextmanager
def forwarded_to(shutdown: Shutdown) -> Iterator[None]:
    """Process-wide handlers that pass SIGTERM/SIGINT on to ``shutdown``, restored after."""
    previous = {s: signal.signal(s, lambda signum, _frame: shutdown.signal(signum)) for s in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_beside_the_main_thread(run: Callable[[], int], serve: Callable[[threading.Thread], None]) -> int:
    """Run the worker's event loop (``run``) in a thread while this (main) thread runs the
    works (``serve``, until that thread ends). The loop thread's exit code is returned, and
    its exception re-raised, here."""
    codes: list[int] = []
    errors: list[BaseException] = []

    def loop_thread() -> None:
        try:
            codes.append(run())
        except BaseException as error:  # re-raised in the main thread
            errors.append(error)

    thread = threading.Thread(target=loop_thread, name="workflow-loop")
    thread.start()
    serve(thread)
    thread.join()
    if errors:
        raise errors[0]
    return codes[0]
