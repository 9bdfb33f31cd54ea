"""The worker, ``workflow run``: withdraw works, run them, record every attempt.

A worker takes works from its buckets (highest priority first) while it has free slots
(``concurrency``), runs each in its isolation (see :mod:`workflow.worker.isolation`), and records
how each attempt ended as one event (see :mod:`workflow.worker.attempts`). It sleeps only
when its buckets are empty, and wakes early when a work is deposited in one of them.

How the loop keeps its slots busy (DESIGN.md, "The fast path"): the *intake*
(:mod:`workflow.worker.intake`, driven by :meth:`Worker._take`) only fetches, one pull per
batch, and while works are short keeps a few deliveries ready beyond the free slots
(nothing is recorded for them yet). Whenever a slot frees, the highest-priority ready
delivery is *dispatched* at once to its own task, which publishes its ``Started`` (the
claim's CAS), runs it, and records it. So the one round trip on a slot's critical path is
its own ``Started``; fetching, and recording the previous outcome, overlap the running.
Where the loop changes state: :meth:`Worker._dispatch` takes a slot, :meth:`Worker._free_slot`
frees it, :meth:`Worker._attempt` brackets one attempt (its start, and its outcome at the end).

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
  killed in ``process`` isolation) and recorded ``Failed(reason="timeout")``, retried
  like any failure while ``retries`` last, unless ``config["retry_on"]`` leaves it out.
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
import sys
import time
from collections.abc import Callable

from workflow.core.errors import ConflictError, PermissionDeniedError
from workflow.core.subjects import BucketKey
from workflow.core.work import Work
from workflow.log import eventloop
from workflow.log.client import Client
from workflow.worker import metrics
from workflow.worker.attempts import Attempts, log_fields
from workflow.worker.config import WorkerConfig
from workflow.worker.intake import Intake, Ready, source_of
from workflow.worker.isolation import Isolation, MainThreadIsolation, make_isolation
from workflow.worker.outcome import Outcome
from workflow.worker.runner import CommandCall, FunctionCall
from workflow.worker.signals import Shutdown, forwarded_to, run_beside_the_main_thread

__all__ = ["Worker", "WorkerConfig", "run_worker"]

log = logging.getLogger("workflow.worker")


class Worker:
    """Runs works from its buckets until its lives are used up or it is told to stop."""

    def __init__(
        self, config: WorkerConfig, isolation: Isolation | None = None, client_type: type[Client] = Client
    ) -> None:
        self.config = config.check()
        self.client_type = client_type  # a filtered worker needs one that finds candidates (workflow.api's)
        self.isolation = isolation or make_isolation(config.isolation, config.concurrency, config.max_works_per_child)
        self.shutdown = Shutdown()
        self.attempts = Attempts(self.config, self.isolation, self.shutdown.abort, self._retry_due)
        self.intake = Intake(self.config, self.shutdown.stop)
        self._busy = 0  # slots taken: works being claimed or whose call runs
        self._claiming = 0  # of those, dispatched deliveries whose Started is not settled yet
        self._taken = 0  # works started (what ``lives`` counts)
        self._client: Client | None = None
        #: Why the server refused this user a claim: the worker stops, and exits with it.
        self._refused: PermissionDeniedError | None = None
        self._active: set[asyncio.Task[None]] = set()  # one task per dispatched delivery, until recorded

    @property
    def exit_code(self) -> int:
        return self.shutdown.exit_code

    def signal(self, signum: int) -> None:
        """Called from a signal handler (any thread): first stop gracefully, then at once."""
        self.shutdown.signal(signum)

    def plan(self, work: Work) -> FunctionCall | CommandCall | Outcome:
        """What to run for ``work`` (see :meth:`Attempts.plan`)."""
        return self.attempts.plan(work)

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> int:
        """Work until done; returns the process exit code."""
        async with self.shutdown.handling():
            return await self._work()

    async def _work(self) -> int:
        """Connect, take works until stopped or out of lives, then let the running ones end.

        Ready deliveries that were never started are given back; the isolation is closed
        (its forkserver and children stopped) however this ends.
        """
        async with self.client_type(**self.config.connect) as client:
            self._client = client
            self.intake.source = source_of(client, self.config)
            await self.isolation.open()
            await self._listen(client)
            try:
                await self._take(client)
                await self.intake.give_back_all(client)
                if self._active:
                    log.info("waiting for %d running work(s) to finish", len(self._active))
                    await asyncio.gather(*self._active, return_exceptions=True)
                if self._refused is not None:
                    raise self._refused
            finally:
                for task in self._active:
                    task.cancel()
                await self.isolation.close()
        log.info("worker stopped (%d work(s) taken)", self._taken)
        return self.exit_code

    async def _listen(self, client: Client) -> None:
        """Hear of deposits in our buckets (they end a sleep) and say who we are."""
        config = self.config
        client.watch.on_queued(self._queued)
        await client.watch.pipelines(config.pipelines)
        log.info(
            "worker %s on %s at site %s: %s isolation, concurrency %d, lives %s, %s",
            client.name, ", ".join(config.pipelines), config.site, self.isolation.name,
            config.concurrency, "unlimited" if config.lives < 0 else config.lives, eventloop.name(),
        )
        if config.filters:
            log.info("taking only works that match %s (found in the read model)", config.filters.describe())
        await self._warn_about_unknown_pipelines(client)

    async def _take(self, client: Client) -> None:
        """Keep deliveries ready for the slots until stopped or out of lives.

        The intake only fetches (one pull per batch) and never waits for a work:
        :meth:`_dispatch` hands a delivery to a free slot as soon as both are there.
        """
        while not self.shutdown.stop.is_set() and not self._out_of_lives():
            wanted = self.intake.room(self._busy)
            if self.config.lives >= 0:
                wanted = min(wanted, self.config.lives - self._taken - self._claiming - len(self.intake))
            if wanted <= 0:  # slots and ready deliveries are full: wait for one to move
                await self.intake.wait_for_room()
            elif await self.intake.fetch(client, wanted):
                self._dispatch()
            await self.intake.expire(client)

    def _out_of_lives(self) -> bool:
        return 0 <= self.config.lives <= self._taken

    def _dispatch(self) -> None:
        """Start ready deliveries on free slots, highest priority first (none after a stop)."""
        config = self.config
        while self.intake and self._busy < config.concurrency and not self.shutdown.stop.is_set():
            if 0 <= config.lives <= self._taken + self._claiming:
                return
            delivered = self.intake.pop()
            self._busy += 1  # a slot is taken
            metrics.slots(busy=self._busy, free=config.concurrency - self._busy)
            self._claiming += 1
            task = asyncio.create_task(self._perform(delivered), name=f"delivery-{delivered.label}")
            self._active.add(task)
            task.add_done_callback(self._active.discard)

    def _free_slot(self, ran_for: float | None = None) -> None:
        """A call has ended after ``ran_for`` s (None: nothing ran): its slot takes the next
        ready delivery."""
        self._busy -= 1  # a slot is free
        metrics.slots(busy=self._busy, free=self.config.concurrency - self._busy)
        self.intake.moved(ran_for)
        self._dispatch()

    def _queued(self, bucket: BucketKey) -> None:
        """Work was queued in one of our pipelines: if at our site, end a sleep."""
        if bucket.site == self.config.site:
            self.intake.wake()

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

    def _retry_due(self, seconds: float) -> None:
        """A failed work comes back in ``seconds``: wake then, in case the buckets look empty."""
        asyncio.get_running_loop().call_later(seconds + 0.05, self.intake.wake)

    # -- one work ---------------------------------------------------------------------

    async def _perform(self, delivered: Ready) -> None:
        """One dispatched delivery, in its own task: claim it, then run and record its attempt."""
        assert self._client is not None
        work = await self._claim(self._client, delivered)
        if work is None:  # stale, or started elsewhere: nothing ran
            self._free_slot()
        else:
            await self._attempt(self._client, work)

    async def _claim(self, client: Client, delivered: Ready) -> Work | None:
        """Publish the delivery's ``Started`` (the CAS :mod:`workflow.core.claim` decides);
        the started work, or None. Each slot does its own, so a batch's starts overlap."""
        try:
            work = await (self.intake.source or source_of(client, self.config)).claim(delivered)
        except PermissionDeniedError as error:  # no retry helps (a filtered claim's KV, its Started): stop
            self._refused = self._refused or error
            self.shutdown.stop.set()
            work = None
        except Exception as error:  # NATS away: the message is delivered again after its lease
            log.warning("could not claim a delivery (%s: %s)", type(error).__name__, error)
            work = None
        self._claiming -= 1
        if work is not None:
            self._taken += 1
        return work

    async def _attempt(self, client: Client, work: Work) -> None:
        """Run one attempt and record it; one log line at its start and one at its end.

        The slot is freed as soon as the call ends (``call_ended``), before the outcome is
        recorded, so the next work runs while this one is written.
        """
        began = time.monotonic()  # the attempt starts
        fields = log_fields(work)
        # debug, not info: the finish line says it all (with the duration), and two lines
        # per work cost a tenth of a no-op work's time in the loop
        log.debug("start %s pipeline=%s attempt=%d", work.id, work.pipeline, work.attempt, extra=fields)
        slot = _Slot(lambda: self._free_slot(time.monotonic() - began))
        outcome = "unknown"
        try:
            outcome = await self.attempts.run(client, work, began, slot.free)
        except ConflictError as error:
            outcome = "conflict"
            log.warning("%s: not recorded, the work was cancelled or handed on meanwhile (%s)", work.id, error,
                        extra=fields)
        except Exception:
            outcome = "unrecorded"
            log.exception("could not record the outcome of %s", work.id, extra=fields)
            if client.lease(work) is not None:  # never keep heartbeating a work we gave up on
                with contextlib.suppress(Exception):
                    await client.release(work, reason="the worker could not record its outcome")
        finally:
            slot.free()
            seconds = time.monotonic() - began
            metrics.observe_attempt(work.pipeline, outcome, seconds)
            failed_with = self.attempts.errors.pop(work.id or "", None)
            said = f" error={first_line(failed_with)}" if failed_with else ""
            log.info(  # the attempt ends; a failed one with its error's first line
                "finish %s pipeline=%s attempt=%d outcome=%s duration=%.3fs%s",
                work.id, work.pipeline, work.attempt, outcome, seconds, said,
                extra={**fields, "outcome": outcome, "seconds": round(seconds, 6), "error": failed_with},
            )


def first_line(text: str, limit: int = 300) -> str:
    """The first line of an error (after the mark of a clipped one), cut to ``limit``
    characters: one log line stays one line."""
    lines = [line for line in text.strip().splitlines() if not line.endswith(" characters cut]")]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


class _Slot:
    """A taken slot, freed once: when its call ends, or at the latest when its attempt does."""

    def __init__(self, free: Callable[[], None]) -> None:
        self._free: Callable[[], None] | None = free

    def free(self) -> None:
        if self._free is not None:
            free, self._free = self._free, None
            free()


def run_worker(config: WorkerConfig, client_type: type[Client] = Client) -> int:
    """Run a worker in this process until it stops; returns the exit code.

    Installs the SIGTERM/SIGINT handlers. In ``none`` isolation the event loop runs in a
    second thread and the main thread runs the works. ``client_type``: the client it
    connects with (a filtered worker's must find candidates: ``workflow.api.Client``).
    """
    if os.getcwd() not in sys.path:  # `--function mymodule.f` finds mymodule.py here, as python would
        sys.path.insert(0, os.getcwd())
    worker = Worker(config, client_type=client_type)
    with forwarded_to(worker.shutdown):
        if isinstance(worker.isolation, MainThreadIsolation):
            isolation = worker.isolation
            return run_beside_the_main_thread(lambda: eventloop.run(worker.run()), lambda t: isolation.serve(until=t))
        return eventloop.run(worker.run())
