"""One attempt of a claimed work: what to run, running it, and recording how it ended.

The loop (:mod:`workflow.worker.loop`) decides *when* a work runs; this module decides
*what* an attempt is and writes its one outcome event. Kept apart so the rules about
outcomes (which failure is retried, which is final, what is recorded when nothing may be)
read in one place, without the claiming and slot bookkeeping around them.

- A call that returns is recorded as its Outcome says (``Succeeded``, or ``Failed``
  retried with backoff while ``retries`` last).
- A timeout stops the call (process isolation kills the child's process group) and is
  retried like any failure while ``retries`` last, unless the work's ``config["retry_on"]``
  leaves ``timeout`` out (:mod:`workflow.core.retry`): the old system retried them too.
- A lost lease (cancelled, handed on) stops the call and records nothing: the work is no
  longer this worker's to record.
- A second signal stops the call and gives the work back (``Failed(interrupted)``,
  redelivered at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from workflow.archive.archiver import Archiver
from workflow.archive.storages import storage_for
from workflow.core.errors import ConflictError, PayloadTooLargeError
from workflow.core.products import ArchivedFile, ArchiveError, uris
from workflow.core.work import Work
from workflow.log.client import Client
from workflow.worker.config import WorkerConfig
from workflow.worker.isolation import CommandExecution, Execution, Isolation
from workflow.worker.outcome import Outcome
from workflow.worker.runner import CommandCall, FunctionCall, work_environment

log = logging.getLogger("workflow.worker")

#: How long (s) a call's outcome is awaited alone before the watchers of a lost lease and a
#: second signal join in: the longest either may go unnoticed.
GLANCE = 0.05


def log_fields(work: Work) -> dict[str, Any]:
    """What a log line about ``work`` carries as fields (``--log-format json``)."""
    return {"work_id": work.id, "pipeline": work.pipeline, "attempt": work.attempt}


class Attempts:
    """Runs claimed works in the worker's isolation and records each attempt.

    ``abort`` is the second-signal event; ``retry_due(seconds)`` is told when a failed
    work will be delivered again, so a sleeping worker wakes for it.
    """

    def __init__(
        self, config: WorkerConfig, isolation: Isolation, abort: asyncio.Event, retry_due: Callable[[float], None]
    ) -> None:
        self.config = config
        self.isolation = isolation
        self._abort = abort
        self._retry_due = retry_due
        #: Why a work's attempt failed (``Type: message``), by work id, until the worker's
        #: ``finish`` line for it takes it: the line an operator reads names the error.
        self.errors: dict[str, str] = {}
        self._archive_for: Client | None = None
        self._archiver_now: Archiver | None = None

    def plan(self, work: Work) -> FunctionCall | CommandCall | Outcome:
        """What to run for ``work``: the worker's --function/--command, else the work's own."""
        config = self.config
        parameters = work.parameters or {}
        function = config.function or (None if config.command else work.function)
        if function is not None:
            whole = work if config.argsource == "work" else None
            return FunctionCall(function=function, parameters=parameters, path=work.path, work=whole)
        argv = config.command or work.command
        if argv is not None:
            env = work_environment(work.id or "", work.pipeline, work.attempt, work.parameters)
            return CommandCall(argv=list(argv), path=work.path, env=env)
        return Outcome(
            status="unrunnable",
            error="the work names no function or command, and this worker was started without --function or --command",
        )

    async def run(self, client: Client, work: Work, began: float, call_ended: Callable[[], None]) -> str:
        """Start what :meth:`plan` says, see it through, record how it ended; the outcome's
        name. ``call_ended`` is called as soon as the call no longer occupies its slot,
        before the outcome is recorded, so the next work starts while this one is written."""
        plan = self.plan(work)
        if isinstance(plan, Outcome):
            call_ended()
            return await self.record(client, work, plan)
        execution = await self._start(work, plan)
        if isinstance(execution, Outcome):
            call_ended()
            return await self.record(client, work, execution)
        return await self._supervise(client, work, plan, execution, began, call_ended)

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
            log.exception("could not start %s", work.id, extra=log_fields(work))
            return Outcome(
                status="failed", error=f"the worker could not start the work: {type(error).__name__}: {error}"
            )

    async def _supervise(
        self, client: Client, work: Work, plan: FunctionCall | CommandCall, execution: Execution, began: float,
        call_ended: Callable[[], None],
    ) -> str:
        """Wait for the first of: the outcome, the lease lost, a second signal, the timeout.

        Anything but the outcome stops the execution (see the module docstring for what
        each records).
        """
        lease = client.lease(work)
        finished = asyncio.ensure_future(execution.outcome())
        if lease is not None and not lease.lost.is_set() and not self._abort.is_set():
            # Most calls end within moments: wait for the outcome alone first, without two
            # watcher tasks to create and cancel (a few % of a no-op work's time). A lost
            # lease or a second signal meanwhile is acted on when the glance ends.
            glance = min(GLANCE, work.timeout - (time.monotonic() - began))
            await asyncio.wait({finished}, timeout=max(glance, 0))
        if finished.done():
            call_ended()
            return await self.record(client, work, finished.result())
        lost = asyncio.ensure_future(lease.lost.wait() if lease is not None else asyncio.sleep(0))
        abort = asyncio.ensure_future(self._abort.wait())
        remaining = work.timeout - (time.monotonic() - began)
        done, _ = await asyncio.wait(
            {finished, lost, abort}, timeout=max(remaining, 0), return_when=asyncio.FIRST_COMPLETED
        )
        lost.cancel()
        abort.cancel()
        if finished in done:
            call_ended()
            return await self.record(client, work, finished.result())
        finished.cancel()
        await execution.stop()
        call_ended()
        if lost in done:
            reason = lease.lost_reason if lease is not None else "lease lost"
            log.warning("%s: stopped, %s; nothing recorded", work.id, reason, extra=log_fields(work))
            return "cancelled" if reason == "cancelled" else "abandoned"
        if abort in done:
            await client.release(work, reason="the worker was told to stop at once (second signal)")
            return "given back"
        # Retried like any failure while retries remain, unless the work's config["retry_on"]
        # leaves "timeout" out (workflow.core.retry).
        error = f"ran past its timeout of {work.timeout}s; {self._stopped_how(plan)}"
        if work.id is not None:
            self.errors[work.id] = error
        event = await client.fail(work, "timeout", error)
        if event.will_retry and event.retry_in is not None:
            self._retry_due(event.retry_in)
            return "timeout, will retry"
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

    async def record(self, client: Client, work: Work, outcome: Outcome) -> str:
        """Archive what the attempt returned, then record its Outcome: Succeeded, or Failed
        with the right reason and retry. An archive that fails fails the attempt (reason
        ``archive``, retried); an outcome the log refuses (a zombie attempt) has its
        uploads removed, so the recorded products are never replaced."""
        archived: list[ArchivedFile] | None = None
        if outcome.products or outcome.plots:
            try:
                archived = await self._archiver(client).archive(work, work.attempt, outcome.products, outcome.plots)
            except ArchiveError as error:
                return await self._archive_failed(client, work, outcome, error)
            outcome = msgspec.structs.replace(
                outcome, products=uris(archived, "product") if outcome.products else outcome.products,
                plots=uris(archived, "plot") if outcome.plots else outcome.plots,
            )
        try:
            return await self._record(client, work, outcome, archived)
        except ConflictError:
            if archived:
                await self._archiver(client).discard(archived)
            raise

    def _archiver(self, client: Client) -> Archiver:
        """The archiver over ``client``'s connection (one per client)."""
        if self._archive_for is not client or self._archiver_now is None:
            self._archiver_now = Archiver(self.config.archive, storage_for(self.config.archive, client.nc))
            self._archive_for = client
        return self._archiver_now

    async def _archive_failed(self, client: Client, work: Work, outcome: Outcome, error: ArchiveError) -> str:
        text = f"archiving the returned files failed: {error}"
        if outcome.status != "succeeded" and outcome.error:
            text += f" (the attempt had also failed: {outcome.error})"
        log.warning("%s: %s", work.id, text, extra=log_fields(work))
        event = await client.fail(work, "archive", text, outcome.traceback, results=outcome.results)
        if event.will_retry and event.retry_in is not None:
            self._retry_due(event.retry_in)
            return "archive, will retry"
        return "archive"

    async def _record(
        self, client: Client, work: Work, outcome: Outcome, archived: list[ArchivedFile] | None,
    ) -> str:
        if outcome.status == "succeeded":
            try:
                await client.succeed(work, outcome.results, outcome.products, outcome.plots, archived=archived)
                return "success"
            except PayloadTooLargeError as error:
                await client.fail(
                    work, "too-large",
                    f"{error}. The results were not recorded; write large data to files and "
                    "return their paths as products.",
                    retry=False, archived=archived,
                )
                return "too-large"
        if outcome.error is not None and work.id is not None:
            self.errors[work.id] = outcome.error
        if outcome.status == "unrunnable":
            await client.fail(work, "unrunnable", outcome.error, retry=False)
            return "unrunnable"
        try:
            event = await client.fail(work, "error", outcome.error, outcome.traceback, results=outcome.results,
                                      products=outcome.products, plots=outcome.plots, archived=archived)
        except PayloadTooLargeError as error:
            error_text = f"{outcome.error} (results not recorded: {error})"
            event = await client.fail(work, "error", error_text, outcome.traceback,
                                      products=outcome.products, plots=outcome.plots, archived=archived)
        if event.will_retry and event.retry_in is not None:
            self._retry_due(event.retry_in)
            return "failed, will retry"
        return "failed"
