"""Where a work's function runs, and how it is stopped: ``process``, ``thread`` or ``none``.

Every isolation turns a call into an :class:`Execution` the worker can await (its
:class:`~workflow.worker.outcome.Outcome`) and stop (on timeout, cancel, or an immediate shutdown).

``process`` (the default) runs each call in a warm child process of a pool, made by a
**forkserver** (a small server process started once, from a fresh interpreter): the
worker itself (event loop, NATS connection, heartbeat) is never forked. A child that
times out, is cancelled or dies is killed (its whole process group, SIGKILL) and
replaced; a child that dies without reporting (``os._exit``, a segfault, the OOM killer)
is an ordinary failed attempt. See :mod:`workflow.worker.pool`.

``thread`` runs each call in a daemon thread of the worker. Python cannot kill a thread:
a work past its timeout is recorded as timed out and its thread is *abandoned* (it runs
on, its result is ignored). A call that kills its process kills the worker.

``none`` runs each call in the worker's main thread, as a plain call (for debuggers, and
libraries that insist on the main thread); the worker's event loop runs in another
thread, so heartbeats go on. One work at a time. Stopping raises an exception in the
function at its next Python instruction (a signal wakes it from a sleep); a function
stuck inside C code cannot be stopped until it returns.

Command works always run as subprocesses (see :class:`CommandExecution`), in their own
process group, killed as a group.

A work's ``path`` is the working directory of its command, and of its function in
``process`` isolation; ``thread`` and ``none`` share the worker's directory (changing it
would change it for every work of the worker), so they ignore ``path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import signal
import threading
from typing import Protocol

from workflow.core.errors import ValidationError
from workflow.log.lifetimes import die_with_parent
from workflow.worker.outcome import Outcome
from workflow.worker.pool import CHILD_PREFIX, ProcessIsolation, kill_group, settle
from workflow.worker.runner import CommandCall, FunctionCall, call_function, command_outcome, environment_with

log = logging.getLogger("workflow.isolation")

ISOLATIONS = ("process", "thread", "none")


class Execution(Protocol):
    """One running call."""

    async def outcome(self) -> Outcome:
        """How the call ended (waits for it)."""

    async def stop(self) -> None:
        """Stop the call as hard as this isolation can; returns when it is stopped or abandoned."""


class Isolation(Protocol):
    name: str

    async def open(self) -> None: ...

    async def start(self, call: FunctionCall) -> Execution: ...

    async def close(self) -> None: ...


# -- thread ----------------------------------------------------------------------------


class ThreadExecution:
    """A call in one of the isolation's threads; stopping abandons it (Python cannot kill
    a thread)."""

    def __init__(self, done: asyncio.Future[Outcome]) -> None:
        self._done = done

    async def outcome(self) -> Outcome:
        return await asyncio.shield(self._done)

    async def stop(self) -> None:
        pass  # abandoned: it runs on in the background and its outcome is ignored


class ThreadIsolation:
    """Calls in reusable daemon threads: a thread is started only when none is idle, and
    kept for the next call (starting one per call cost about a tenth of a no-op work).
    An abandoned call keeps its thread busy until it returns, so it never slows the next
    work: another thread is started for that."""

    name = "thread"

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[FunctionCall, asyncio.Future[Outcome]] | None] = queue.SimpleQueue()
        self._idle = 0
        self._threads = 0
        self._lock = threading.Lock()

    async def open(self) -> None:
        pass

    async def start(self, call: FunctionCall) -> ThreadExecution:
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        with self._lock:
            spawn = self._idle == 0
            if spawn:
                self._threads += 1
            else:
                self._idle -= 1
        if spawn:
            name = f"{CHILD_PREFIX}thread-{self._threads}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()
        self._calls.put((call, done))
        return ThreadExecution(done)

    def _serve(self) -> None:
        """One thread: run calls until told to end (a None), reporting each outcome."""
        thread = threading.current_thread()
        idle_name = thread.name
        while (job := self._calls.get()) is not None:
            call, done = job
            thread.name = f"{CHILD_PREFIX}{call.function}"  # what it runs, for ps, py-spy and tests
            try:
                outcome = call_function(call)
            except BaseException as error:  # a thread must report whatever ended it
                outcome = Outcome(status="failed", error=f"{type(error).__name__}: {error}")
            with contextlib.suppress(RuntimeError):  # the loop may be closed if abandoned
                done.get_loop().call_soon_threadsafe(settle, done, outcome)
            thread.name = idle_name
            with self._lock:
                self._idle += 1

    async def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, 0
        for _ in range(idle):  # busy (abandoned) threads are daemons: they die with the worker
            self._calls.put(None)


# -- none (the main thread) ------------------------------------------------------------


class _Interrupted(BaseException):
    """Raised inside a main-thread call to stop it (a BaseException: ``except Exception``
    in the user's code does not swallow it)."""


class _Job:
    def __init__(self, call: FunctionCall, loop: asyncio.AbstractEventLoop) -> None:
        self.call = call
        self.loop = loop
        self.done: asyncio.Future[Outcome] = loop.create_future()
        self.finished = threading.Event()
        self.interrupted = False


class MainThreadExecution:
    def __init__(self, job: _Job, isolation: MainThreadIsolation) -> None:
        self._job = job
        self._isolation = isolation

    async def outcome(self) -> Outcome:
        return await asyncio.shield(self._job.done)

    async def stop(self) -> None:
        self._job.interrupted = True
        self._isolation.interrupt(self._job)
        await asyncio.to_thread(self._job.finished.wait, 10)


class MainThreadIsolation:
    """Calls run in the main thread, which :meth:`serve` hands over; the event loop runs
    in another thread. SIGUSR1 carries an interrupt to the main thread."""

    name = "none"
    INTERRUPT_SIGNAL = signal.SIGUSR1

    def __init__(self) -> None:
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._current: _Job | None = None

    async def open(self) -> None:
        pass

    async def start(self, call: FunctionCall) -> MainThreadExecution:
        job = _Job(call, asyncio.get_running_loop())
        self._jobs.put(job)
        return MainThreadExecution(job, self)

    async def close(self) -> None:
        pass

    def interrupt(self, job: _Job) -> None:
        main = threading.main_thread().ident  # never None: the main thread has started
        if self._current is job and main is not None:
            signal.pthread_kill(main, self.INTERRUPT_SIGNAL)

    def _on_interrupt(self, signum: int, frame: object) -> None:
        job = self._current
        if job is not None and job.interrupted:
            raise _Interrupted()

    def serve(self, until: threading.Thread) -> None:
        """Run calls in this (the main) thread until ``until`` (the loop's thread) ends."""
        signal.signal(self.INTERRUPT_SIGNAL, self._on_interrupt)
        while until.is_alive():
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            outcome = self._run(job)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits for it
                job.loop.call_soon_threadsafe(settle, job.done, outcome)

    def _run(self, job: _Job) -> Outcome:
        """One call, unless it was stopped before it started; an interrupt fails it."""
        outcome = Outcome(status="failed", error="interrupted before it started")
        try:
            if not job.interrupted:
                self._current = job
                outcome = call_function(job.call)
                # Cleared inside the try too: an interrupt that lands after the call
                # returned is caught below, never raised out of the finally.
                self._current = None
        except _Interrupted:
            outcome = Outcome(status="failed", error="interrupted by the worker")
        finally:
            self._current = None
            job.finished.set()
        return outcome


def make_isolation(name: str, concurrency: int = 1, max_works_per_child: int | None = None) -> Isolation:
    """The isolation called ``name``; a process pool holds ``concurrency`` warm children."""
    if name == "process":
        return ProcessIsolation(concurrency, max_works_per_child)
    if name == "thread":
        return ThreadIsolation()
    if name == "none":
        return MainThreadIsolation()
    raise ValidationError("isolation", f"expected one of {', '.join(ISOLATIONS)}, got {name!r}")


# -- commands --------------------------------------------------------------------------


class CommandExecution:
    """A command work as a subprocess in its own session, output captured."""

    def __init__(self, call: CommandCall, process: asyncio.subprocess.Process) -> None:
        self.call = call
        self.process = process
        self._communicate = asyncio.ensure_future(process.communicate())

    @classmethod
    async def start(cls, call: CommandCall) -> CommandExecution | Outcome:
        """The running command, or an unrunnable Outcome if it cannot start."""
        try:
            process = await asyncio.create_subprocess_exec(
                *call.argv, cwd=None if call.path in ("", ".") else call.path, env=environment_with(call.env),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        except (OSError, ValueError) as error:
            return Outcome(status="unrunnable", error=f"cannot start command {call.argv!r}: {error}")
        return cls(call, process)

    async def outcome(self) -> Outcome:
        stdout, stderr = await asyncio.shield(self._communicate)
        return command_outcome(self.call.argv, self.process.returncode or 0, stdout, stderr)

    async def stop(self) -> None:
        if self.process.returncode is None:
            kill_group(self.process.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._communicate, 10)
