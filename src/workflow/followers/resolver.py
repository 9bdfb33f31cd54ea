"""The resolver: releases waiting works when their precursors succeeded and their time came.

A waiting work's ``Deposited`` is on ``wf.<pipeline>.<id>.waiting``, in no bucket. The
resolver (run by ``workflow server``; any number may run) reads the whole log in order
with an ordered consumer and keeps in memory, in a :class:`~workflow.core.waits.Registry`,
which waiting works wait for what, with one timer heap for ``not_before``. What the
registry decides, it writes with the CAS against the waiting work's head:

- a ``Requeued`` (on the queue subject: the work enters its bucket, and a worker claims
  it as any re-queued work) once every precursor succeeded and its time has come;
- a ``Cancelled(reason="precursor X failed")`` once a precursor failed for good or was
  cancelled (a configuration run's work: ``skipped: step fetch failed (precursor X)``);
- a work of a configuration run that reads earlier steps' results (``${{ steps.X.results.K }}``)
  has them read and substituted at its release: the ``Requeued`` carries the resolved work,
  so a replay shows what it was given (a missing result cancels it, saying which);
- for a work whose rule (``waits.when``) is ``always`` or ``failure``: a ``Requeued`` once
  every precursor finished (``failure``: and one did not succeed), else a ``Cancelled``
  saying it was skipped (see :mod:`workflow.core.waits`);
- for a work whose ``config["if"]`` is an expression over earlier steps
  (``pipeline.fetch.status == 'failure'``): once every precursor finished, the registry
  judges it (pure, :func:`workflow.core.waits.judge`) and the ``Requeued`` or ``Cancelled``
  reason records the verdict and the statuses it was judged on.

A second resolver's write is refused by the CAS (ConflictError): it re-reads the work,
finds it no longer waiting, and moves on, so each release happens exactly once. Nothing is
kept on disk: on start the resolver reads the log from its first event, reads the heads of
the precursors still pending, and releases at once every work whose time passed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
import nats.errors
from nats.js.api import DeliverPolicy

from workflow.core import events as ev
from workflow.core.configs import inputs_of, resolve_inputs
from workflow.core.errors import ConflictError, NotFoundError, ValidationError, WorkflowError
from workflow.core.fold import fold
from workflow.core.settings import lease_seconds
from workflow.core.subjects import PREFIX, STREAM, BucketKey
from workflow.core.waits import Action, Cancel, Registry, Waiting, precursor_outcome
from workflow.followers.restarts import restarting
from workflow.log import jsapi
from workflow.log.buckets import Buckets
from workflow.log.client import Client
from workflow.log.lifetimes import until_stopped_or_failed

log = logging.getLogger("workflow.resolver")

#: Precursor heads read at once when going live.
_LOOKUPS = 256
#: Writes a resolver tries for one work whose head keeps moving under it (forged messages).
_TRIES = 3
#: Step names of precursors kept for skip reasons (one run's failure skips many works at once).
_STEP_NAMES = 4096


class Resolver:
    """One resolver over one client's connection (see the module's docstring)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._buckets = Buckets(client.nc, lease_seconds())
        self.registry = Registry()
        self._inbox: asyncio.Queue[tuple[int, str, bytes, int]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self.live = asyncio.Event()  # set once the log is read up to where it was at the start
        self._steps: dict[str, asyncio.Future[str]] = {}  # precursor id -> its configuration step (skip reasons)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log and act until ``stop`` is set."""
        last = await jsapi.last_sequence(self._client.nc)

        async def on_message(msg: Any) -> None:
            meta = msg.metadata
            self._inbox.put_nowait((meta.sequence.stream, msg.subject, msg.data, meta.num_pending))

        subscription = await self._client.nc.jetstream().subscribe(
            f"{PREFIX}.>", stream=STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, cb=on_message,
        )
        try:
            await until_stopped_or_failed(stop, self._read(last), self._timers())
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _read(self, last: int) -> None:
        """Feed the log to the registry in order; go live once caught up."""
        if last == 0:
            await self._go_live()
        while True:
            seq, subject, data, pending = await self._inbox.get()
            tokens = subject.split(".")
            # only a waiting deposit, or an event of a work waiting or waited for, is decoded
            # (``wf._schedule.…``: a schedule's events, never a work's)
            if len(tokens) >= 4 and not tokens[1].startswith("_") and (
                tokens[3] == "waiting" or self.registry.concerns(tokens[2])
            ):
                await self._observe(seq, tokens[2], data)
            if self._caught_up(seq, last, pending):
                await self._go_live()
            self._wake.set()

    async def _observe(self, seq: int, work_id: str, data: bytes) -> None:
        try:
            event: ev.AnyEvent | None = ev.decode(data)
        except ValidationError:
            event = None  # not an event, but still a message on that work's subjects
        # A precursor the registry already follows (waiting, or waited for by another work)
        # has not finished as far as the log read so far says: its head need not be read.
        # (A run's stage deposits many works after the same precursors: one read, not one each.)
        unknown = [] if not isinstance(event, ev.Deposited) or event.waits is None else [
            p for p in event.waits.precursors if not self.registry.concerns(p)]
        actions = self.registry.observe(seq, work_id, event, time.time())
        if self.live.is_set() and isinstance(event, ev.Deposited) and event.waits is not None:
            actions += await self._read_heads(unknown)
            actions += self.registry.check(work_id, time.time())
        await self._act_all(actions)

    def _caught_up(self, seq: int, last: int, pending: int) -> bool:
        """True at the message that brings the resolver up to where the log was at its start."""
        return not self.live.is_set() and (seq >= last or pending == 0)

    async def _go_live(self) -> None:
        """Caught up: read the heads of the precursors still pending (they may have ended
        before the works waiting for them were deposited), then do everything due."""
        precursors = sorted(self.registry.pending_precursors())
        actions: list[Action] = []
        for start in range(0, len(precursors), _LOOKUPS):
            actions += await self._read_heads(precursors[start : start + _LOOKUPS])
        actions += self.registry.go_live(time.time())
        self.live.set()
        log.info("resolver live: %d works waiting", len(self.registry.works))
        await self._act_all(actions)

    async def _read_heads(self, precursors: list[str]) -> list[Action]:
        """What the precursors' current heads say (one that does not exist yet is pending:
        it was deposited in the same batch, and its events are still to come)."""
        heads = await asyncio.gather(*(self._client.head(p) for p in precursors))
        actions: list[Action] = []
        for precursor, head in zip(precursors, heads, strict=True):
            outcome = precursor_outcome(None if head is None else head.event)
            if outcome is not None:
                actions += self.registry.precursor(precursor, outcome, time.time())
        return actions

    async def _timers(self) -> None:
        """Release delayed works when their time comes: one sleep until the earliest timer."""
        await self.live.wait()
        while True:
            due = self.registry.next_due()
            self._wake.clear()
            timeout = None if due is None else max(0.0, due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            await self._act_all(self.registry.due(time.time()))

    async def _act_all(self, actions: list[Action]) -> None:
        """Write the actions, ``_LOOKUPS`` at once: each concerns another work (the registry
        forgets a work once it acts on it), so their order does not matter, and a stage of a
        run released by one success is many works whose writes need not wait for each other."""
        for start in range(0, len(actions), _LOOKUPS):
            await asyncio.gather(*(self._act_reported(action) for action in actions[start : start + _LOOKUPS]))

    async def _act_reported(self, action: Action) -> None:
        try:
            await self._act(action)
        except WorkflowError as error:  # rebuilt from the log at the next start
            log.error("could not resolve work %s: %s", action.waiting.work_id, error)

    async def _act(self, action: Action) -> None:
        """Write the action with the CAS; if refused, write it again only if the work still waits."""
        waiting = action.waiting
        expected: int | None = waiting.seq
        for _ in range(_TRIES):
            assert expected is not None
            event = await self._event(action)
            try:
                await self._client.append_durably(event, expected, patience=60)
                log.info("work %s: %s", waiting.work_id, action.reason)
                return
            except ConflictError:
                expected = await self._still_waiting(waiting)
                if expected is None:
                    return
        log.error("work %s kept changing; not resolved", waiting.work_id)

    async def _event(self, action: Action) -> ev.AnyEvent:
        waiting = action.waiting
        common: dict[str, Any] = {"work_id": waiting.work_id, "pipeline": waiting.work.pipeline, "time": time.time(),
                                  "by": self._client.name}
        if isinstance(action, Cancel):
            return ev.Cancelled(**common, reason=await self._skip_reason(action))
        work = msgspec.structs.replace(waiting.work, status="queued")
        inputs = inputs_of(work)
        if inputs:  # a configuration step that reads earlier steps' results: resolved now, recorded here
            try:
                found = await asyncio.gather(*(self._client.get(work_id) for work_id in inputs))
                work = resolve_inputs(work, {w.id: w.results for w in found if w.id is not None})
            except (ValidationError, NotFoundError) as error:
                return ev.Cancelled(**common, reason=f"skipped: its inputs could not be read: {error}")
        await self._buckets.ensure(BucketKey(work.pipeline, work.site, work.priority))
        return ev.Requeued(**common, work=work, reason=action.reason)

    async def _skip_reason(self, action: Cancel) -> str:
        """A step of a configuration run is skipped naming the step that did not succeed
        (``skipped: step fetch failed (precursor ID)``), read from that precursor's work;
        any other work keeps the registry's reason."""
        precursor = action.precursor
        if precursor is None or "step" not in (action.waiting.work.config or {}):
            return action.reason
        lookup = self._steps.get(precursor)
        if lookup is None:  # one read per precursor, however many works it skips at once
            if len(self._steps) > _STEP_NAMES:
                self._steps.clear()
            lookup = self._steps[precursor] = asyncio.ensure_future(self._step_of(precursor))
        step = await asyncio.shield(lookup)
        if not step:
            return action.reason
        return f"skipped: step {step} {action.outcome} (precursor {precursor})"

    async def _step_of(self, work_id: str) -> str:
        """The configuration step of a work ("" if none, or if it cannot be read now)."""
        try:
            return str(((await self._client.get(work_id)).config or {}).get("step", ""))
        except (WorkflowError, nats.errors.Error, TimeoutError):  # the reason then names the work only
            return ""

    async def _still_waiting(self, waiting: Waiting) -> int | None:
        """The work's head sequence if it still waits (its head was a forged message), else
        None: another resolver or an operator released or cancelled it."""
        records = await self._client.history_records(waiting.work_id, waiting.work.pipeline)
        state = fold((r.event for r in records), skip_refused=True)
        if state is None or state.status != "waiting":
            log.debug("work %s no longer waits (%s)", waiting.work_id, None if state is None else state.status)
            return None
        return records[-1].seq


async def run_resolver(url: str, stop: asyncio.Event, **connect_options: Any) -> None:
    """Run a resolver until ``stop`` is set (``workflow server`` runs one); after a failure
    it starts again from the log (:mod:`workflow.followers.restarts`)."""
    async with Client(url, name=connect_options.pop("name", "workflow-resolver"), **connect_options) as client:
        await restarting("resolver", lambda: Resolver(client).run(stop), stop, log)
