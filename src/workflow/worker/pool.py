"""``process`` isolation: a pool of warm, reusable child processes (as Celery's prefork).

Forking a child per work cost ~19 ms of a no-op work; a warm child runs the next call as
soon as it is written to its pipe. What a child per work guaranteed still holds, because
a child that cannot be trusted any more is never reused:

- **Timeout, cancel, a second signal**: the child's whole process group is SIGKILLed and
  the child is dropped from the pool; the next work runs in a fresh child.
- **A child that dies** (``os._exit``, a segfault, the OOM killer) ends its pipe: the
  attempt is an ordinary failure, the child is dropped and replaced.
- **The worker is never forked**: children are made by a **forkserver**, started once
  from a fresh interpreter (spawn semantics), so no event loop, NATS connection or lock
  of the worker is ever copied into a child.
- **Processes a work leaves behind end with the work**: each child is a *subreaper*
  (``PR_SET_CHILD_SUBREAPER``), so everything its function started, even a daemon that
  left the process group, stays its descendant; after each call the child kills and reaps
  them all before it reports. (Without ``/proc/<pid>/task/*/children`` the child
  instead exits after each work, and its process group is killed: a child per work.)
- **Dying with the worker**: each child starts its own session (killed as one group, deaf
  to the terminal's Ctrl-C), asks to be SIGKILLed if its forkserver dies
  (``PR_SET_PDEATHSIG``), and the forkserver exits with the worker.

``max_works_per_child`` recycles a child after that many works (a leaky library cannot
grow a child for ever): its call pipe is closed, it exits on its own, and a fresh child
takes its place. What a warm child keeps between works is what any long-lived Python
process keeps: imported modules and their globals.

A call and its outcome cross the pipes as JSON frames (8-byte length, then the bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.spawn
import os
import signal
import struct
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import msgspec

from workflow.log.lifetimes import die_with_parent, prctl
from workflow.worker.outcome import Outcome
from workflow.worker.runner import FunctionCall, call_function

log = logging.getLogger("workflow.isolation")

_PR_SET_CHILD_SUBREAPER = 36
_FRAME = struct.Struct(">Q")
_outcome_decoder = msgspec.json.Decoder(Outcome)
_call_decoder = msgspec.json.Decoder(FunctionCall)
CHILD_PREFIX = "workflow:"

T = TypeVar("T")


def settle(future: asyncio.Future[T], value: T) -> None:
    """Give ``future`` its result unless it already has one (or was cancelled)."""
    if not future.done():
        future.set_result(value)


def kill_group(pid: int, *, leader_alive: bool = True) -> None:
    """SIGKILL the process group led by ``pid`` (or just ``pid`` if it has none yet)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if leader_alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def readable(fd: int) -> None:
    """Wait until ``fd`` is readable (or closed), without a thread."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, settle, ready, None)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from a blocking ``fd``; None at end of file."""
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# -- in the child -----------------------------------------------------------------------


def _descendants() -> list[int] | None:
    """This process's children (all threads'), or None if Linux cannot say."""
    try:
        pids: list[int] = []
        for tid in os.listdir("/proc/self/task"):
            fd = os.open(f"/proc/self/task/{tid}/children", os.O_RDONLY)  # not open(): 3x the time, at every work
            try:
                text = os.read(fd, 1 << 20)
            finally:
                os.close(fd)
            pids += [int(pid) for pid in text.split()]
        return pids
    except (OSError, ValueError):
        return None


def _end_descendants() -> bool:
    """Kill and reap every process the last call left behind; False if that cannot be
    done here (then the child must not be reused)."""
    for _ in range(1000):  # each round reaps one generation; orphans come to us (subreaper)
        pids = _descendants()
        if pids is None:
            return False
        if not pids:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return False


def _run_call(call: FunctionCall, home: str) -> Outcome:
    """One call in the work's directory; the child goes back home after it."""
    if call.path not in ("", "."):
        try:
            os.chdir(call.path)
        except OSError as error:
            return Outcome(status="unrunnable", error=f"cannot enter the work's path {call.path!r}: {error}")
    try:
        return call_function(call)
    except BaseException as error:  # report anything rather than die silently
        return Outcome(status="failed", error=f"{type(error).__name__}: {error}")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(home)


def _child_main(calls: Connection, outcomes: Connection) -> None:  # pragma: no cover - runs in the child
    """Entry point of a pool child: run calls from ``calls`` until it closes, writing
    each Outcome to ``outcomes``."""
    calls_fd, outcomes_fd = calls.fileno(), outcomes.fileno()
    os.setsid()  # its own process group: killed as one, deaf to the terminal's Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the forkserver ignores it (see forkserver_preload)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any Python process
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the forkserver died before we asked
        os._exit(1)
    reusable = prctl(_PR_SET_CHILD_SUBREAPER, 1)
    home = os.getcwd()
    sys.path.insert(0, home)  # the worker's directory, as `python -m` would, even after chdir
    while (header := _read_exactly(calls_fd, _FRAME.size)) is not None:
        data = _read_exactly(calls_fd, _FRAME.unpack(header)[0])
        if data is None:
            break
        outcome = _run_call(_call_decoder.decode(data), home)
        reusable = _end_descendants() and reusable
        report = msgspec.json.encode(outcome)
        write_all(outcomes_fd, _FRAME.pack(len(report)) + report)
        if not reusable:
            break  # the worker sees the pipe close, and kills what is left in our group
    os._exit(0)


# -- in the worker ---------------------------------------------------------------------


class Child:
    """A warm child process: its pipes, and how many works it has run."""

    def __init__(self, process: multiprocessing.process.BaseProcess, calls: Connection, outcomes: Connection) -> None:
        if process.pid is None:
            raise ValueError("a Child is made of a started process")
        self.process = process
        self.pid: int = process.pid  # kept: a closed process object no longer says it
        self._calls, self._outcomes = calls, outcomes  # kept: they close their fds when collected
        self.calls_fd = calls.fileno()
        self.outcomes_fd = outcomes.fileno()
        self.works = 0
        os.set_blocking(self.outcomes_fd, False)

    def send(self, call: FunctionCall) -> None:
        """Write a call to the child (raises OSError if the child is gone)."""
        data = msgspec.json.encode(call)
        write_all(self.calls_fd, _FRAME.pack(len(data)) + data)

    async def receive(self) -> bytes | None:
        """The next outcome frame, read as it comes (a large result never blocks the child
        on a full pipe); None if the pipe closed first (the child died)."""
        buffer = bytearray()
        size: int | None = None
        while size is None or len(buffer) < _FRAME.size + size:
            await readable(self.outcomes_fd)
            try:
                chunk = os.read(self.outcomes_fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                return None
            buffer += chunk
            if size is None and len(buffer) >= _FRAME.size:
                size = _FRAME.unpack_from(buffer)[0]
        return bytes(buffer[_FRAME.size :])

    async def end(self, *, kill: bool, grace: float = 5.0) -> int | None:
        """Stop the child (SIGKILL its group at once if ``kill``, else close its call pipe
        and give it ``grace`` s to exit), free its pipes; its exit code."""
        self._calls.close()
        if kill:
            kill_group(self.pid)
        try:
            await asyncio.wait_for(readable(self.process.sentinel), None if kill else grace)
        except TimeoutError:
            kill_group(self.pid)
            await readable(self.process.sentinel)
        kill_group(self.pid, leader_alive=False)  # whatever it left in its group
        self._outcomes.close()
        code = self.process.exitcode
        with contextlib.suppress(ValueError):
            self.process.close()
        return code


#: What a supervisor sends a worker's whole process group to stop it.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _with_stop_signals_blocked(start: Callable[[], T]) -> T:
    """``start()`` (which may spawn the forkserver) with SIGTERM and SIGINT blocked in
    this thread, so a spawned forkserver starts with them blocked.

    The forkserver shares the worker's process group and ignores both, but only once its
    preload has run; a group signal before that (while it imports workflow) would kill it,
    and the worker could start no work (it died with ``EOFError``). Blocked from birth,
    a signal waits, and the preload discards it by ignoring it before unblocking
    (multiprocessing's resource tracker is started the same way). Call it off the main
    thread: the worker's own handlers still run there.

    The resource tracker is made sure of first: starting it *unblocks* both signals in
    the calling thread when it is done, which would undo ours.
    """
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _preparation_data_without_main(
    name: str, _original: Callable[[str], dict[str, Any]] = multiprocessing.spawn.get_preparation_data
) -> dict[str, Any]:
    """multiprocessing's preparation data, minus the re-import of ``__main__`` for our children.

    A spawn/forkserver child normally imports the parent's ``__main__`` first (for pickled
    functions defined there). The worker's ``__main__`` is the whole CLI (typer, rich and
    every command), which a child that runs importable functions never needs: skipping it
    makes a child start faster and keeps the CLI's import side effects out of it. Only
    processes named by this module (``workflow:…``) are affected.
    """
    data = _original(name)
    if name.startswith(CHILD_PREFIX):
        data.pop("init_main_from_name", None)
        data.pop("init_main_from_path", None)
    return data


class ProcessIsolation:
    """Each call in a warm child of a pool of up to ``size`` (see the module docstring)."""

    name = "process"

    def __init__(self, size: int = 1, max_works_per_child: int | None = None) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._size = max(size, 1)
        self._max_works = max_works_per_child
        self._idle: list[Child] = []
        self._busy: set[Child] = set()
        self._retiring: set[asyncio.Task[int | None]] = set()

    async def open(self) -> None:
        """Start the forkserver, then the children (together), so the first works find
        them warm. The forkserver preloads workflow, not the user's code: an import error
        there must fail the work, not the forkserver."""
        self._context.set_forkserver_preload(["workflow.worker.forkserver_preload"])
        multiprocessing.spawn.get_preparation_data = _preparation_data_without_main
        from multiprocessing import forkserver

        await asyncio.to_thread(_with_stop_signals_blocked, forkserver.ensure_running)
        self._idle += await asyncio.gather(*(self._spawn() for _ in range(self._size)))

    async def _spawn(self) -> Child:
        calls_reader, calls_writer = self._context.Pipe(duplex=False)
        outcomes_reader, outcomes_writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main, args=(calls_reader, outcomes_writer), name=f"{CHILD_PREFIX}pool-child"
        )
        try:  # process.start starts the forkserver again if it died: the same protection
            await asyncio.to_thread(_with_stop_signals_blocked, process.start)
        finally:  # the child has its ends now; ours would hide its death from us
            calls_reader.close()
            outcomes_writer.close()
        return Child(process, calls_writer, outcomes_reader)

    async def start(self, call: FunctionCall) -> PooledExecution:
        """Hand ``call`` to an idle child (a fresh one if none is idle, or the idle one
        turned out dead)."""
        while True:
            child = self._idle.pop() if self._idle else await self._spawn()
            try:
                child.send(call)
            except OSError:  # it died while idle: drop it, try another
                self._retire(child, kill=True)
                continue
            self._busy.add(child)
            return PooledExecution(self, child)

    def give_back(self, child: Child) -> None:
        """A child that reported: reused, unless it has run its share of works."""
        self._busy.discard(child)
        child.works += 1
        if self._max_works is not None and child.works >= self._max_works:
            self._retire(child, kill=False)
        else:
            self._idle.append(child)

    def _retire(self, child: Child, *, kill: bool) -> asyncio.Task[int | None]:
        """End a child in the background (its exit code is the task's result)."""
        self._busy.discard(child)
        task = asyncio.ensure_future(child.end(kill=kill))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task

    async def drop(self, child: Child) -> int | None:
        """Kill a child that cannot be trusted (timed out, cancelled, died); its exit code."""
        return await self._retire(child, kill=True)

    async def close(self) -> None:
        for child in [*self._busy, *self._idle]:
            self._retire(child, kill=child in self._busy)
        self._idle.clear()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


class PooledExecution:
    """A call running in a pool child; its Outcome arrives as a frame on the child's pipe."""

    def __init__(self, pool: ProcessIsolation, child: Child) -> None:
        self._pool = pool
        self._child = child
        self._settled = False

    async def outcome(self) -> Outcome:
        data = await self._child.receive()
        self._settled = True
        if data is not None:
            try:
                outcome = _outcome_decoder.decode(data)
            except msgspec.DecodeError:
                pass  # cannot happen from a live child; treat it as a dead one
            else:
                self._pool.give_back(self._child)
                return outcome
        code = await self._pool.drop(self._child)
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return Outcome(
            status="failed",
            error=f"the work's process {how} before reporting an outcome (os._exit, a crash, or the OOM killer)",
        )

    async def stop(self) -> None:
        """Kill the child's process group (the child is never reused)."""
        if not self._settled:
            self._settled = True
            await self._pool.drop(self._child)
