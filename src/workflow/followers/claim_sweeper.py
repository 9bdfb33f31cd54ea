"""The claim sweeper: a dead filtered claim is recorded lost without an unfiltered worker.

A filtered withdraw (``workflow run P --tag T``) holds its work by a heartbeat key in
``workflow-claims`` (:mod:`workflow.log.claimer_keys`), and the work's queue message stays
in its bucket as watchdog: a dead claim is noticed when a bucket worker meets that
message. With only filtered workers, nobody meets it. The sweeper (run by ``workflow
server``; any number may run) closes that hole:

- it follows the log with an ordered consumer and keeps, in memory, the works whose last
  event is a ``Started(via="filter")`` (any later event of a work drops it): no read-model
  lag, no scan of works, and a restart rebuilds it from the log;
- every third of a lease it reads each such work's head and its claimer's key; a key
  that is gone or names another attempt (:meth:`~workflow.log.claimer_keys.Heartbeats.alive`
  is False, never None: no loss without evidence) makes the bucket watchdog's own decision,
  :func:`~workflow.core.claim.decide_on_head` with ``claimer_alive=False``, and its
  ``Failed(reason="lost")`` (:meth:`~workflow.core.claim.RecordLost.failed`) is appended
  with the CAS against that head.

The CAS makes the record exactly-once: a second sweeper, or a bucket worker meeting the
message at the same moment, is refused and moves on. A live claim renews its key every
third of a lease, so the sweeper never touches it. After the ``Failed(will_retry)``, the
work is a retry of the same chain: a filtered worker claims it again
(:func:`~workflow.core.claim.decide_filtered`), or a bucket worker meeting the message
does; with no retry left the work has failed for good (the message is discarded as stale
when a bucket worker meets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.js.api import DeliverPolicy

from workflow.core import events as ev
from workflow.core.claim import Delivery, Head, RecordLost, decide_on_head
from workflow.core.errors import ConflictError, ValidationError
from workflow.core.settings import lease_seconds
from workflow.core.subjects import PREFIX, STREAM
from workflow.followers.restarts import restarting
from workflow.log.claimer_keys import Heartbeats
from workflow.log.client import Client
from workflow.log.filtered import event_at
from workflow.log.lifetimes import until_stopped_or_failed

log = logging.getLogger("workflow.sweeper")

#: The sweeper looks at the filtered claims this many times per lease.
SWEEPS_PER_LEASE = 3
#: Bytes every filter claim's event holds (msgspec writes it so): only those are decoded.
_FILTER_MARK = b'"via":"filter"'


class ClaimSweeper:
    """One sweeper over one client's connection (see the module's docstring)."""

    def __init__(self, client: Client, interval: float | None = None) -> None:
        self._client = client
        self._heartbeats = Heartbeats(client.nc)
        self.interval = interval if interval is not None else lease_seconds() / SWEEPS_PER_LEASE
        self.held: dict[str, str] = {}  # work id -> pipeline, of works whose last event is a filter claim
        self.recorded = 0  # losses this sweeper recorded (the CAS refuses the others)
        self.sweeps = 0  # sweeps done (tests wait on it rather than on time)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log and sweep until ``stop`` is set."""

        async def on_message(msg: Any) -> None:
            # observed at once, not queued: a start-up read of a long log never holds its
            # messages in memory (only the ids of held works are kept)
            self.observe(msg.subject, msg.data)

        subscription = await self._client.nc.jetstream().subscribe(
            f"{PREFIX}.>", stream=STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, cb=on_message,
        )
        log.info("claim sweeper following the log (a sweep every %.1f s)", self.interval)
        try:
            await until_stopped_or_failed(stop, self._sweeping())
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def observe(self, subject: str, data: bytes) -> None:
        """One message of the log: a filter claim is watched, any other event of its work ends that."""
        tokens = subject.split(".")
        if len(tokens) < 4 or tokens[1].startswith("_"):  # ``wf._schedule.…``: not a work's
            return
        work_id = tokens[2]
        if _FILTER_MARK in data:
            with contextlib.suppress(ValidationError):
                event = ev.decode(data)
                if isinstance(event, ev.Started) and event.via == "filter":
                    self.held[work_id] = event.pipeline
                    return
        self.held.pop(work_id, None)

    async def _sweeping(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.sweep()

    async def sweep(self) -> int:
        """Look at every watched claim once; the number of losses recorded."""
        recorded = 0
        for work_id, pipeline in list(self.held.items()):
            try:
                recorded += await self.check(work_id, pipeline)
            except Exception as error:  # one work that cannot be read never stops the others
                log.warning("checking the filtered claim of %s failed: %r", work_id, error)
        self.sweeps += 1
        return recorded

    async def check(self, work_id: str, pipeline: str) -> bool:
        """Record the work's filter claim lost if its claimer stopped heartbeating; True if
        this sweeper recorded it."""
        record = await self._client.head(work_id, pipeline)
        if record is None or not isinstance(record.event, ev.Started) or record.event.via != "filter":
            return False  # moved on since: the log's next message drops it from ``held``
        started = record.event
        if await self._heartbeats.alive(work_id, started.by, started.attempt) is not False:
            return False  # alive, or the key cannot be read: no loss without evidence
        queued = await event_at(self._client.nc, started.queue_seq)
        if queued is None or not isinstance(queued.event, ev.Deposited | ev.Requeued):
            log.warning("the filtered claim of %s names queue sequence %d, which is not a queue event",
                        work_id, started.queue_seq)
            return False
        snapshot = queued.event.work
        delivery = Delivery(num_delivered=2, queue_seq=started.queue_seq, base_attempt=snapshot.attempt,
                            retries=snapshot.retries, timeout=snapshot.timeout, lease=lease_seconds())
        lost = decide_on_head(delivery, Head(record.seq, started), claimer_alive=False, now=time.time())
        if not isinstance(lost, RecordLost):  # cannot be, with a filter claim of this chain at the head
            return False
        failed = lost.failed(work_id, pipeline, by=self._client.name, now=time.time())
        try:
            await self._client.append(failed, lost.expected_seq)
        except ConflictError:
            return False  # another sweeper, a bucket worker or the claimer itself was first
        self.held.pop(work_id, None)
        self.recorded += 1
        log.info("work %s: filtered claim of attempt %d by %s lost (%s)", work_id, lost.attempt, lost.lost_by,
                 "retried" if lost.will_retry else "no retry left: failed for good")
        return True


async def run_claim_sweeper(url: str, stop: asyncio.Event, **connect_options: Any) -> None:
    """Run a sweeper until ``stop`` is set (``workflow server`` runs one); after a failure
    it starts again from the log (:mod:`workflow.followers.restarts`)."""
    async with Client(url, name=connect_options.pop("name", "workflow-sweeper"), **connect_options) as client:
        await restarting("claim sweeper", lambda: ClaimSweeper(client).run(stop), stop, log)
