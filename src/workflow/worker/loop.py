"""The worker, ``workflow run``: withdraw works, run them, record every attempt.

A worker takes works from its buckets (highest priority first) while it has free slots
(``concurrency``), runs each in its isolation (see :mod:`workflow.worker.isolation`), and records
how each attempt ended as one event. It sleeps only when its buckets are empty, and wakes
early when a work is deposited in one of them.

What it promises, and how:

- **At-least-once execution.** A work is run until one attempt is recorded as finished.
  A worker that dies mid-work (even SIGKILL) stops heartbeating; after the lease window
  JetStream redelivers the work, the next worker records the lost attempt
  (``Failed(reason="lost")``) and runs it again. So a function may run more than once
  (a crash after it finished but before its ``Succeeded`` landed runs it again): make
  functions safe to repeat. What can never happen is two *recorded* outcomes, or a
  stale worker overwriting a newer attempt: every event is a compare-and-set on the
  work's history, and a refused one (ConflictError) is logged and changes nothing.
- **Leases.** While a work runs, the client heartbeats it (one timer for all the works it
  holds) at least every third of the lease, so a
  long work is never handed to another worker while its worker lives.
- **Timeouts.** A work that runs past its own ``timeout`` is stopped (its process group
  killed in ``process`` isolation) and recorded ``Failed(reason="timeout")``, final:
  a work that hung once is not retried into hanging again.
- **Retries.** A raised exception, a non-zero exit, or a child process that died is
  ``Failed(reason="error", will_retry=True)`` with the error and traceback, retried with
  exponential backoff until ``retries`` are used up, then failed for good.
- **Cancel.** A cancelled running work is stopped as soon as its ``Cancelled`` event
  reaches the worker (it subscribes to the cancels of its pipelines); nothing more is
  recorded for it.
- **Shutdown.** The first SIGTERM/SIGINT stops withdrawing and lets the running works
  finish (exit 0); a second one stops them at once, gives them back
  (``Failed(reason="interrupted", will_retry=True)``, redelivered immediately) and exits
  with 128 + the signal number.

What runs: the worker's ``--function`` for every work if given, else its ``--command``,
else the work's own ``function``, else its own ``command``. Functions are called as
``function(**parameters)`` (see :mod:`workflow.worker.runner` for how return values become
results); commands get the work in their environment (``WORKFLOW_WORK_ID``,
``WORKFLOW_PIPELINE``, ``WORKFLOW_ATTEMPT``, ``WORKFLOW_PARAMETERS`` as JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from workflow.core.errors import ConflictError, PayloadTooLargeError, ValidationError
from workflow.core.subjects import PREFIX
from workflow.core.work import Work, validate_field
from workflow.log.client import Client
from workflow.worker.isolation import (
    ISOLATIONS,
    CommandExecution,
    Execution,
    Isolation,
    MainThreadIsolation,
    make_isolation,
)
from workflow.worker.runner import CommandCall, FunctionCall, Outcome, work_environment

log = logging.getLogger("workflow.worker")

#: Pauses (s) before asking empty buckets again after a wake-up (see ``Worker._withdraw``).
REWAKE_DELAYS = (0.002, 0.01, 0.05)


@dataclass
class WorkerConfig:
    """What ``workflow run`` was asked to do (validated by :meth:`check`)."""

    pipelines: list[str]
    site: str = "local"
    function: str | None = None
    command: list[str] | None = None
    lives: int = -1
    sleep: float = 30.0
    concurrency: int = 1
    isolation: str = "process"
    max_works_per_child: int | None = None  # process isolation: recycle a child after this many works
    connect: dict[str, Any] = field(default_factory=dict)

    def check(self) -> WorkerConfig:
        if not self.pipelines:
            raise ValidationError("pipeline", "name at least one pipeline (bucket) to work on")
        for name in self.pipelines:
            validate_field("pipeline", name)
        validate_field("site", self.site)
        if self.function is not None and self.command is not None:
            raise ValidationError("function", "run a function or a command, not both")
        if self.function is not None:
            validate_field("function", self.function)
        if self.command is not None and not self.command:
            raise ValidationError("command", "expected a non-empty command line")
        if self.lives == 0 or self.lives < -1:
            raise ValidationError("lives", f"expected a number of works >= 1, or -1 for no limit; got {self.lives}")
        if not 1 <= self.sleep <= 300:
            raise ValidationError("sleep", f"expected 1 to 300 seconds, got {self.sleep}")
        if self.concurrency < 1:
            raise ValidationError("concurrency", f"expected at least 1, got {self.concurrency}")
        if self.isolation not in ISOLATIONS:
            raise ValidationError("isolation", f"expected one of {', '.join(ISOLATIONS)}, got {self.isolation!r}")
        if self.max_works_per_child is not None and self.max_works_per_child < 1:
            raise ValidationError(
                "max_works_per_child", f"expected at least 1 (or no limit), got {self.max_works_per_child}"
            )
        if self.isolation == "none" and self.concurrency != 1:
            raise ValidationError("concurrency", "isolation none runs works in the main thread: one at a time")
        return self


class Worker:
    """Runs works from its buckets until its lives are used up or it is told to stop."""

    def __init__(self, config: WorkerConfig, isolation: Isolation | None = None) -> None:
        self.config = config.check()
        self.isolation = isolation or make_isolation(config.isolation, config.concurrency, config.max_works_per_child)
        # The events bind to the event loop on first use (asyncio, Python 3.10+), so they
        # can be made here; only the loop itself is known once :meth:`run` starts.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()  # first signal: take no more works
        self._abort = asyncio.Event()  # second signal: give the running works back now
        self._wake = asyncio.Event()  # a deposit in one of our buckets, or a retry due
        self._signals: list[int] = []  # signals that came before the loop ran
        self._rewakes = 0  # empty withdraws since the last wake-up
        self._running: set[str] = set()  # works whose call occupies a slot (not yet ended)
        self._slot_freed = asyncio.Event()
        self.exit_code = 0

    # -- signals (any thread) ---------------------------------------------------------

    def signal(self, signum: int) -> None:
        """Called from a signal handler: first stop gracefully, then at once."""
        loop = self._loop
        if loop is None:
            self._signals.append(signum)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._stop.is_set():
            log.info("%s: finishing the running works, taking no more (signal again to stop at once)", name)
            self._stop.set()
        elif not self._abort.is_set():
            log.warning("%s again: stopping the running works now and giving them back", name)
            self.exit_code = 128 + signum
            self._abort.set()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> int:
        """Work until done; returns the process exit code."""
        self._loop = loop = asyncio.get_running_loop()
        in_main_thread = threading.current_thread() is threading.main_thread()
        handled: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT) if in_main_thread else ()
        if in_main_thread:
            for signum in handled:  # wakes the loop at once (wakeup fd)
                loop.add_signal_handler(signum, self._on_signal, signum)
        else:  # the main thread runs the works (isolation none) and must get the signals
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        for early in self._signals:
            self._on_signal(early)
        try:
            return await self._work()
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

    async def _work(self) -> int:
        """Connect, take works until stopped or out of lives, then let the running ones end.

        The isolation is closed (its forkserver and children stopped) however this ends.
        """
        async with Client(**self.config.connect) as client:
            await self.isolation.open()
            await self._listen(client)
            active: set[asyncio.Task[None]] = set()
            try:
                taken = await self._take(client, active)
                if active:
                    log.info("waiting for %d running work(s) to finish", len(active))
                    await asyncio.gather(*active, return_exceptions=True)
            finally:
                for task in active:
                    task.cancel()
                await self.isolation.close()
        log.info("worker stopped (%d work(s) taken)", taken)
        return self.exit_code

    async def _listen(self, client: Client) -> None:
        """Subscribe to deposits in our buckets (they end a sleep) and say who we are."""
        config = self.config
        for pipeline in config.pipelines:
            await client.nc.subscribe(f"{PREFIX}.{pipeline}.*.queued.{config.site}.*", cb=self._woken)
        log.info(
            "worker %s on %s at site %s: %s isolation, concurrency %d, lives %s",
            client.name, ", ".join(config.pipelines), config.site, self.isolation.name,
            config.concurrency, "unlimited" if config.lives < 0 else config.lives,
        )
        await self._warn_about_unknown_pipelines(client)

    async def _take(self, client: Client, active: set[asyncio.Task[None]]) -> int:
        """Start works while there are free slots and lives; returns how many were taken.

        One withdraw claims as many works as there are free slots (a batch: one pull, the
        ``Started`` events published together). Each work runs in its own task, added to
        ``active`` until it is recorded, so a slow work never holds up the next withdraw.
        A slot is free as soon as its call ends: the outcome is recorded while the next
        work is withdrawn and started, so the bookkeeping overlaps the running.
        """
        config = self.config
        taken = 0
        while not self._stop.is_set() and (config.lives < 0 or taken < config.lives):
            free = config.concurrency - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await _first_of(self._stop.wait(), self._slot_freed.wait())
                continue
            if config.lives >= 0:
                free = min(free, config.lives - taken)
            for work in await self._withdraw(client, free):
                taken += 1
                self._running.add(work.id or "")
                task = asyncio.create_task(self._perform(client, work), name=f"work-{work.id}")
                active.add(task)
                task.add_done_callback(active.discard)
        return taken

    async def _withdraw(self, client: Client, free: int) -> list[Work]:
        """Up to ``free`` works, or none once it is time to try again.

        A conflict (another worker took it) tries again at once; an error (NATS away or
        refusing) after a second; empty buckets after a sleep that a deposit, a retry
        coming due, or a signal ends early. A wake-up can outrun the deposit it announces
        into the bucket (the subscriber hears the publish as the stream stores it), so
        empty buckets just after a wake-up are asked again a few times, briefly, before
        the long sleep.
        """
        woken = self._wake.is_set()
        self._wake.clear()
        try:
            works = await client.withdraw_many(self.config.pipelines, free, site=self.config.site)
        except ConflictError:
            return []
        except Exception as error:
            log.warning("withdraw failed (%s: %s); trying again shortly", type(error).__name__, error)
            await _first_of(self._stop.wait(), timeout=1.0)
            return []
        if works:
            self._rewakes = 0
        elif woken and self._rewakes < len(REWAKE_DELAYS):
            await _first_of(self._stop.wait(), timeout=REWAKE_DELAYS[self._rewakes])
            self._rewakes += 1
            self._wake.set()
        else:
            self._rewakes = 0
            await _first_of(self._stop.wait(), self._wake.wait(), timeout=self.config.sleep)
        return works

    async def _warn_about_unknown_pipelines(self, client: Client) -> None:
        """Say so when a pipeline has never had work at this site: most often a typo."""
        try:
            buckets = await client.buckets()
        except Exception:  # only a hint: never stop a worker for it
            return
        here = {b.pipeline for b in buckets if b.site == self.config.site}
        for pipeline in self.config.pipelines:
            if pipeline not in here:
                elsewhere = sorted({b.site for b in buckets if b.pipeline == pipeline})
                known = sorted({b.pipeline for b in buckets})
                log.warning(
                    "no work has ever been deposited for pipeline %r at site %r%s; waiting for some. "
                    "Known pipelines: %s",
                    pipeline, self.config.site,
                    f" (it has work at: {', '.join(elsewhere)})" if elsewhere else "",
                    ", ".join(known) or "none yet",
                )

    async def _woken(self, _msg: Any) -> None:
        self._wake.set()

    # -- one work ---------------------------------------------------------------------

    async def _perform(self, client: Client, work: Work) -> None:
        """Run one attempt and record it; one log line at its start and one at its end."""
        began = time.monotonic()
        log.info("start %s pipeline=%s attempt=%d", work.id, work.pipeline, work.attempt)
        outcome = "unknown"
        try:
            outcome = await self._attempt(client, work, began)
        except ConflictError as error:
            outcome = "conflict"
            log.warning("%s: not recorded, the work was cancelled or handed on meanwhile (%s)", work.id, error)
        except Exception:
            outcome = "unrecorded"
            log.exception("could not record the outcome of %s", work.id)
            if client.lease(work) is not None:  # never keep heartbeating a work we gave up on
                with contextlib.suppress(Exception):
                    await client.release(work, reason="the worker could not record its outcome")
        finally:
            self._free_slot(work)
            log.info(
                "finish %s pipeline=%s attempt=%d outcome=%s duration=%.3fs",
                work.id, work.pipeline, work.attempt, outcome, time.monotonic() - began,
            )

    def _free_slot(self, work: Work) -> None:
        """The work's call has ended (or never ran): its slot may take the next work."""
        self._running.discard(work.id or "")
        self._slot_freed.set()

    def plan(self, work: Work) -> FunctionCall | CommandCall | Outcome:
        """What to run for ``work``: the worker's --function/--command, else the work's own."""
        config = self.config
        parameters = work.parameters or {}
        function = config.function or (None if config.command else work.function)
        if function is not None:
            return FunctionCall(function=function, parameters=parameters, path=work.path)
        argv = config.command or work.command
        if argv is not None:
            env = work_environment(work.id or "", work.pipeline, work.attempt, work.parameters)
            return CommandCall(argv=list(argv), path=work.path, env=env)
        return Outcome(
            status="unrunnable",
            error="the work names no function or command, and this worker was started without --function or --command",
        )

    async def _attempt(self, client: Client, work: Work, began: float) -> str:
        """Start what :meth:`plan` says, see it through, record how it ended."""
        plan = self.plan(work)
        if isinstance(plan, Outcome):
            return await self._record(client, work, plan)
        execution = await self._start(work, plan)
        if isinstance(execution, Outcome):
            return await self._record(client, work, execution)
        return await self._supervise(client, work, plan, execution, began)

    async def _start(self, work: Work, plan: FunctionCall | CommandCall) -> Execution | Outcome:
        """The running call, or the Outcome that says why nothing runs.

        When the isolation itself fails (e.g. no forkserver) the attempt fails as an
        ordinary error, so it is retried later rather than lost.
        """
        try:
            if isinstance(plan, FunctionCall):
                return await self.isolation.start(plan)
            return await CommandExecution.start(plan)
        except Exception as error:
            log.exception("could not start %s", work.id)
            return Outcome(
                status="failed", error=f"the worker could not start the work: {type(error).__name__}: {error}"
            )

    async def _supervise(
        self, client: Client, work: Work, plan: FunctionCall | CommandCall, execution: Execution, began: float
    ) -> str:
        """Wait for the first of: the outcome, the lease lost, a second signal, the timeout.

        Anything but the outcome stops the execution. A lost lease (cancelled, or handed
        to another worker) records nothing: the work is no longer ours to record. A
        second signal gives the work back; a timeout fails it for good.
        """
        lease = client.lease(work)
        lost = asyncio.ensure_future(lease.lost.wait() if lease is not None else asyncio.sleep(0))
        abort = asyncio.ensure_future(self._abort.wait())
        finished = asyncio.ensure_future(execution.outcome())
        remaining = work.timeout - (time.monotonic() - began)
        done, _ = await asyncio.wait(
            {finished, lost, abort}, timeout=max(remaining, 0), return_when=asyncio.FIRST_COMPLETED
        )
        lost.cancel()
        abort.cancel()
        if finished in done:
            self._free_slot(work)
            return await self._record(client, work, finished.result())
        finished.cancel()
        await execution.stop()
        if lost in done:
            reason = lease.lost_reason if lease is not None else "lease lost"
            log.warning("%s: stopped, %s; nothing recorded", work.id, reason)
            return "cancelled" if reason == "cancelled" else "abandoned"
        if abort in done:
            await client.release(work, reason="the worker was told to stop at once (second signal)")
            return "given back"
        await client.fail(
            work, "timeout", f"ran past its timeout of {work.timeout}s; {self._stopped_how(plan)}", retry=False,
        )
        return "timeout"

    def _stopped_how(self, plan: FunctionCall | CommandCall) -> str:
        """What stopping a timed-out call did, for the Failed event's error."""
        if isinstance(plan, CommandCall):
            return "the command's process group was killed"
        return {
            "process": "its process group was killed",
            "thread": "its thread could not be killed and was abandoned",
            "none": "it was interrupted",
        }.get(self.isolation.name, "it was stopped")

    async def _record(self, client: Client, work: Work, outcome: Outcome) -> str:
        """Record an Outcome: Succeeded, or Failed with the right reason and retry."""
        if outcome.status == "succeeded":
            try:
                await client.succeed(work, outcome.results, outcome.products, outcome.plots)
                return "success"
            except PayloadTooLargeError as error:
                await client.fail(
                    work, "too-large",
                    f"{error}. The results were not recorded; write large data to files and "
                    "return their paths as products.",
                    retry=False,
                )
                return "too-large"
        if outcome.status == "unrunnable":
            await client.fail(work, "unrunnable", outcome.error, retry=False)
            return "unrunnable"
        try:
            event = await client.fail(work, "error", outcome.error, outcome.traceback, results=outcome.results)
        except PayloadTooLargeError as error:
            error_text = f"{outcome.error} (results not recorded: {error})"
            event = await client.fail(work, "error", error_text, outcome.traceback)
        if event.will_retry and event.retry_in is not None and self._loop is not None:
            self._loop.call_later(event.retry_in + 0.05, self._wake.set)
            return "failed, will retry"
        return "failed"


async def _first_of(*waitables: Any, timeout: float | None = None) -> None:
    """Wait until the first of these finishes (or ``timeout``); cancels the coroutines."""
    futures = [asyncio.ensure_future(w) for w in waitables]
    try:
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future, original in zip(futures, waitables, strict=True):
            if future is not original:
                future.cancel()


def run_worker(config: WorkerConfig) -> int:
    """Run a worker in this process until it stops; returns the exit code.

    Installs the SIGTERM/SIGINT handlers. In ``none`` isolation the event loop runs in a
    second thread and the main thread runs the works.
    """
    if os.getcwd() not in sys.path:  # `--function mymodule.f` finds mymodule.py here, as python would
        sys.path.insert(0, os.getcwd())
    worker = Worker(config)
    previous = {
        s: signal.signal(s, lambda signum, _frame: worker.signal(signum)) for s in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        if isinstance(worker.isolation, MainThreadIsolation):
            return _run_beside_the_main_thread(worker, worker.isolation)
        return asyncio.run(worker.run())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_beside_the_main_thread(worker: Worker, isolation: MainThreadIsolation) -> int:
    """Run the worker's event loop in a thread while this (main) thread runs the works.

    The loop thread's exit code is returned, and its exception re-raised, here.
    """
    codes: list[int] = []
    errors: list[BaseException] = []

    def loop_thread() -> None:
        try:
            codes.append(asyncio.run(worker.run()))
        except BaseException as error:  # re-raised in the main thread
            errors.append(error)

    thread = threading.Thread(target=loop_thread, name="workflow-loop")
    thread.start()
    isolation.serve(until=thread)
    thread.join()
    if errors:
        raise errors[0]
    return codes[0]
