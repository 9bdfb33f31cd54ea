"""Where a work's function runs, and how it is stopped: ``process``, ``thread`` or ``none``.

Every isolation turns a call into an :class:`Execution` the worker can await (its
:class:`~workflow.worker.runner.Outcome`) and stop (on timeout, cancel, or an immediate shutdown).

``process`` (the default) runs each call in a child process made by a **forkserver**: a
small server process started once, from a fresh interpreter, that forks a child per call.
The worker itself (event loop, NATS connection, heartbeat tasks) is never forked. Each
child starts its own session, so stopping it kills its whole process group (the function
and any subprocess it started) with SIGKILL, and the worker carries on. The child asks to
be killed if its forkserver dies (``PR_SET_PDEATHSIG``); the forkserver exits when the
worker does, so even a SIGKILLed worker leaves no function running. A child that dies
without reporting (``os._exit``, a segfault, the OOM killer) is an ordinary failed
attempt, and the worker records it.

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
import ctypes
import logging
import multiprocessing
import multiprocessing.spawn
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypeVar

import msgspec

from workflow.core.errors import ValidationError
from workflow.worker.runner import CommandCall, FunctionCall, Outcome, call_function, command_outcome, environment_with

log = logging.getLogger("workflow.isolation")

ISOLATIONS = ("process", "thread", "none")
_PR_SET_PDEATHSIG = 1
_outcome_decoder = msgspec.json.Decoder(Outcome)

T = TypeVar("T")


def _settle(future: asyncio.Future[T], value: T) -> None:
    """Give ``future`` its result unless it already has one (or was cancelled)."""
    if not future.done():
        future.set_result(value)


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


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(pid: int, *, leader_alive: bool = True) -> None:
    """SIGKILL the process group led by ``pid`` (or just ``pid`` if it has none yet)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if leader_alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _readable(fd: int) -> None:
    """Wait until ``fd`` is readable (or closed), without a thread."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, _settle, ready, None)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


# -- process ---------------------------------------------------------------------------


def _child_main(conn: Connection, call_json: bytes) -> None:  # pragma: no cover - runs in the child
    """Entry point of a forkserver child: run the call, write its Outcome as JSON, exit."""
    os.setsid()  # its own process group: killed as one, deaf to the terminal's Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the forkserver ignores it (see forkserver_preload)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the forkserver died before we asked
        os._exit(1)
    call = msgspec.json.decode(call_json, type=FunctionCall)
    sys.path.insert(0, os.getcwd())  # the worker's directory, as `python -m` would, even after chdir
    if call.path not in ("", "."):
        try:
            os.chdir(call.path)
        except OSError as error:
            outcome = Outcome(status="unrunnable", error=f"cannot enter the work's path {call.path!r}: {error}")
            _write_all(conn.fileno(), msgspec.json.encode(outcome))
            return
    try:
        outcome = call_function(call)
    except BaseException as error:  # report anything rather than die silently
        outcome = Outcome(status="failed", error=f"{type(error).__name__}: {error}")
    sys.stdout.flush()
    sys.stderr.flush()
    _write_all(conn.fileno(), msgspec.json.encode(outcome))
    conn.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class ProcessExecution:
    """A call running in a forkserver child; its Outcome arrives as JSON on a pipe.

    Once the outcome is read, the child has :attr:`EXIT_GRACE` seconds to exit, and then
    anything left in its process group (background processes the function started) is
    killed: a work's processes end with the work.
    """

    EXIT_GRACE = 5.0

    def __init__(self, process: multiprocessing.process.BaseProcess, reader: Connection,
                 running: set[ProcessExecution]) -> None:
        if process.pid is None:
            raise ValueError("a ProcessExecution is made of a started process")
        self.process = process
        self._pid: int = process.pid  # kept: a closed process object no longer says it
        self._reader = reader
        self._running = running
        self._closed = False
        running.add(self)

    async def outcome(self) -> Outcome:
        data = await self._read_report()
        code = await self._reap(reported=bool(data))
        if data:
            try:
                return _outcome_decoder.decode(data)
            except msgspec.DecodeError:
                pass  # killed while writing
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return Outcome(
            status="failed",
            error=f"the work's process {how} before reporting an outcome (os._exit, a crash, or the OOM killer)",
        )

    async def _read_report(self) -> bytes:
        """Everything the child wrote before it closed the pipe (nothing if it died first).

        Read as it comes: a large result never blocks the child on a full pipe.
        """
        fd = self._reader.fileno()
        os.set_blocking(fd, False)
        chunks: list[bytes] = []
        try:
            while True:
                await _readable(fd)
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            self._reader.close()
        return b"".join(chunks)

    async def _reap(self, *, reported: bool) -> int | None:
        """Wait for the child to exit, end its process group, and return its exit code.

        A child that reported may still run atexit handlers, but not for ever: after
        :attr:`EXIT_GRACE` it is killed.
        """
        try:
            await asyncio.wait_for(_readable(self.process.sentinel), self.EXIT_GRACE if reported else None)
        except TimeoutError:
            log.warning(
                "%s reported its outcome but did not exit within %ss: killed", self.process.name, self.EXIT_GRACE
            )
            _kill_group(self._pid)
            await _readable(self.process.sentinel)
        # Processes the function left behind end with the work (no orphans between works).
        _kill_group(self._pid, leader_alive=False)
        code = self.process.exitcode
        self._release()
        return code

    async def stop(self) -> None:
        if self._closed:
            return
        if self.process.exitcode is None:
            _kill_group(self._pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(_readable(self.process.sentinel), 10)
        if self.process.exitcode is not None:
            self._release()

    def _release(self) -> None:
        """Forget the exited child and free its file descriptors (a worker lives long)."""
        self._running.discard(self)
        self._closed = True
        with contextlib.suppress(ValueError):
            self.process.close()


_CHILD_PREFIX = "workflow:"


def _preparation_data_without_main(
    name: str, _original: Callable[[str], dict[str, Any]] = multiprocessing.spawn.get_preparation_data
) -> dict[str, Any]:
    """multiprocessing's preparation data, minus the re-import of ``__main__`` for our children.

    A spawn/forkserver child normally imports the parent's ``__main__`` first (for pickled
    functions defined there). The worker's ``__main__`` is the whole CLI (typer, rich and
    every command), which a child that runs one importable function never needs: skipping
    it makes each work start faster and keeps the CLI's import side effects out of it.
    Only processes named by this module (``workflow:…``) are affected.
    """
    data = _original(name)
    if name.startswith(_CHILD_PREFIX):
        data.pop("init_main_from_name", None)
        data.pop("init_main_from_path", None)
    return data


class ProcessIsolation:
    """Each call in a forkserver child (see the module docstring)."""

    name = "process"

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._running: set[ProcessExecution] = set()

    async def open(self) -> None:
        # Preload workflow (not the user's code: an import error there must fail the
        # work, not the forkserver). Started here, once, off the event loop.
        self._context.set_forkserver_preload(["workflow.worker.forkserver_preload"])
        multiprocessing.spawn.get_preparation_data = _preparation_data_without_main
        from multiprocessing import forkserver

        await asyncio.to_thread(forkserver.ensure_running)

    async def start(self, call: FunctionCall) -> ProcessExecution:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main, args=(writer, msgspec.json.encode(call)), name=f"{_CHILD_PREFIX}{call.function}"
        )
        try:
            await asyncio.to_thread(process.start)
        finally:
            writer.close()
        return ProcessExecution(process, reader, self._running)

    async def close(self) -> None:
        for execution in list(self._running):
            await execution.stop()
        self._running.clear()


# -- thread ----------------------------------------------------------------------------


class ThreadExecution:
    """A call in a daemon thread; stopping abandons it (Python cannot kill a thread)."""

    def __init__(self, call: FunctionCall) -> None:
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future[Outcome] = loop.create_future()

        def target() -> None:
            try:
                outcome = call_function(call)
            except BaseException as error:  # a thread must report whatever ended it
                outcome = Outcome(status="failed", error=f"{type(error).__name__}: {error}")
            with contextlib.suppress(RuntimeError):  # the loop may be closed if abandoned
                loop.call_soon_threadsafe(_settle, self._done, outcome)

        threading.Thread(target=target, name=f"{_CHILD_PREFIX}{call.function}", daemon=True).start()

    async def outcome(self) -> Outcome:
        return await asyncio.shield(self._done)

    async def stop(self) -> None:
        pass  # abandoned: it runs on in the background and its outcome is ignored


class ThreadIsolation:
    name = "thread"

    async def open(self) -> None:
        pass

    async def start(self, call: FunctionCall) -> ThreadExecution:
        return ThreadExecution(call)

    async def close(self) -> None:
        pass


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
                job.loop.call_soon_threadsafe(_settle, job.done, outcome)

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


def make_isolation(name: str) -> Isolation:
    if name == "process":
        return ProcessIsolation()
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
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        except (OSError, ValueError) as error:
            return Outcome(status="unrunnable", error=f"cannot start command {call.argv!r}: {error}")
        return cls(call, process)

    async def outcome(self) -> Outcome:
        stdout, stderr = await asyncio.shield(self._communicate)
        return command_outcome(self.call.argv, self.process.returncode or 0, stdout, stderr)

    async def stop(self) -> None:
        if self.process.returncode is None:
            _kill_group(self.process.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._communicate, 10)
