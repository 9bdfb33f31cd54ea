"""The scheduler: keeps the server's timers in step with the log, and deposits each firing.

Run by ``workflow server`` (any number may run). It does two things:

- **Timers follow the log.** It reads the schedule events (``wf._schedule.>``) in order
  with an ordered consumer and folds them into a :class:`~workflow.core.schedules.Schedules`.
  For each schedule in force it makes sure the timer stream holds its timer (a message
  with ``Nats-Schedule`` on ``wfsched.timer.<name>``, tagged with the ``ScheduleAdded`` id
  it serves); for a removed one it purges the timer. A timer that is already right is left
  alone, so a restart does not move an ``@every`` schedule's phase; two schedulers writing
  the same timer at once are told apart by the CAS on the timer's subject.
- **Each firing deposits one work.** The server copies the timer to
  ``wfsched.fired.<name>`` at each firing; the schedulers share one durable consumer on
  those. A firing deposits the schedule's work with the id derived from the definition
  and the firing's time (the stream's timestamp of the firing: the same for every
  reader), appended against sequence 0, so a redelivered firing, or one two schedulers
  both handle, deposits once. Then the firing is acked, which removes it (a work queue).
  A firing at or after its schedule's removal deposits nothing. A schedule of a pipeline
  configuration (``ScheduleAdded.configuration``) starts a run of it instead, its id
  derived from the firing the same way (:func:`workflow.log.configs.start_scheduled_run`).

Firings missed while no scheduler ran wait in the timer stream and are each deposited
once one runs again. Firings the NATS server itself missed while it was down are not
made up one by one: the server fires once when it is back, then on schedule again (as
``anacron`` does), and that one firing deposits one work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from workflow.core import events as ev
from workflow.core import schedules as sch
from workflow.core.errors import ConflictError, ValidationError, WorkflowError
from workflow.core.settings import lease_seconds
from workflow.core.subjects import STREAM, BucketKey
from workflow.followers.pulling import pull
from workflow.followers.restarts import restarting
from workflow.log import jsapi
from workflow.log.buckets import Buckets
from workflow.log.client import Client
from workflow.log.gateway import UNAVAILABLE, last_message
from workflow.log.lifetimes import until_stopped_or_failed
from workflow.log.schedules import (
    DEFINITION_HEADER,
    FIRED_FILTER,
    TIMER_PREFIX,
    TIMER_STREAM,
    ensure_timer_stream,
    fired_subject,
    last_schedule_sequence,
    timer_subject,
)

log = logging.getLogger("workflow.scheduler")

#: The durable consumer every scheduler shares on the firings.
CONSUMER = "scheduler"
#: Firings pulled at once, and how long one may be held before it is handed to another scheduler.
_BATCH = 64
_ACK_WAIT = 30.0
#: How long a firing of a definition this scheduler has not read yet waits for the log.
_CATCH_UP = 10.0


class Scheduler:
    """One scheduler over one client's connection (see the module's docstring)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._buckets = Buckets(client.nc, lease_seconds())
        self.schedules = sch.Schedules()
        self.position = 0  # the last schedule event read (stream sequence)
        self._read = asyncio.Event()  # set whenever ``position`` moves
        self._inbox: asyncio.Queue[Msg] = asyncio.Queue()
        self.live = asyncio.Event()  # set once the schedule events are read up to the start
        self._subscriptions: list[Any] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the schedules and deposit their firings until ``stop`` is set."""
        last = await last_schedule_sequence(self._client.nc)
        subscription = await self._client.nc.jetstream().subscribe(
            f"{sch.SCHEDULE_PREFIX}.>", stream=STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL,
            cb=self._inbox.put,
        )
        try:
            await until_stopped_or_failed(stop, self._follow(last), self._fire())
        finally:
            for subscribed in (subscription, *self._subscriptions):
                with contextlib.suppress(Exception):
                    await subscribed.unsubscribe()

    # -- the schedules, from the log ---------------------------------------------------

    async def _follow(self, last: int) -> None:
        if last == 0:
            await self._go_live()
        while True:
            msg = await self._inbox.get()
            meta = msg.metadata
            try:
                event = sch.decode(msg.data)
            except ValidationError:
                event = None  # not a schedule event: nothing changes
            if event is not None:
                self.schedules.observe(event, meta.timestamp.timestamp())
            self.position = meta.sequence.stream
            self._read.set()
            if not self.live.is_set() and (self.position >= last or meta.num_pending == 0):
                await self._go_live()
            elif event is not None and self.live.is_set():
                await self._reconcile(event.name)

    async def _go_live(self) -> None:
        """Read up to the start: set every timer right, then handle firings."""
        names = set(self.schedules.active) | await self._timer_names()
        for name in sorted(names):
            await self._reconcile(name)
        self.live.set()
        log.info("scheduler live: %d schedule(s) in force", len(self.schedules.active))

    async def _timer_names(self) -> set[str]:
        info = await jsapi.request(self._client.nc, f"STREAM.INFO.{TIMER_STREAM}",
                                   {"subjects_filter": f"{TIMER_PREFIX}.timer.>"})
        return {subject.split(".", 2)[2] for subject in (info.get("state", {}).get("subjects") or {})}

    async def _reconcile(self, name: str) -> None:
        """Make the timer of ``name`` match the schedule in force (or be gone)."""
        try:
            seq, definition = await self._timer(name)
            added_id = self.schedules.active.get(name)
            if added_id is None:
                if seq:
                    purge = {"filter": timer_subject(name)}
                    await jsapi.request(self._client.nc, f"STREAM.PURGE.{TIMER_STREAM}", purge)
                    log.info("schedule %s removed: its timer is gone", name)
            elif definition != added_id:
                await self._set_timer(self.schedules.definitions[added_id].added, seq)
        except WorkflowError as error:  # set right again at the next start
            log.error("could not set the timer of schedule %s: %s", name, error)
        except UNAVAILABLE as error:
            log.error("could not set the timer of schedule %s (NATS away: %r)", name, error)

    async def _timer(self, name: str) -> tuple[int, str | None]:
        """The sequence of the timer of ``name`` (0: none) and the definition it serves."""
        msg = await last_message(self._client.nc, timer_subject(name), TIMER_STREAM)
        if msg is None:
            return 0, None
        headers = msg.headers or {}
        return int(headers["Nats-Sequence"]), headers.get(DEFINITION_HEADER)

    async def _set_timer(self, added: sch.ScheduleAdded, expected: int) -> None:
        headers = {
            "Nats-Schedule": added.schedule,
            "Nats-Schedule-Target": fired_subject(added.name),
            DEFINITION_HEADER: added.id,
            "Nats-Expected-Last-Subject-Sequence": str(expected),
        }
        if added.timezone is not None:  # the server reads the cron's fields in this zone (2.14+)
            headers["Nats-Schedule-Time-Zone"] = added.timezone
        reply = await self._client.nc.request(timer_subject(added.name), b"", timeout=5, headers=headers)
        error = json.loads(reply.data).get("error")
        if error is None:
            log.info("schedule %s: timer set (%s %s)", added.name, added.schedule, added.timezone or "UTC")
            return
        refused = jsapi.error_of(error, f"the server refused the timer {added.schedule!r}")
        if not isinstance(refused, ConflictError):
            raise refused
        log.debug("schedule %s: another scheduler set its timer", added.name)

    # -- the firings -------------------------------------------------------------------

    async def _fire(self) -> None:
        await self.live.wait()
        js = self._client.nc.jetstream()
        config = ConsumerConfig(ack_wait=_ACK_WAIT, max_ack_pending=_BATCH * 4, deliver_policy=DeliverPolicy.ALL)
        subscription = await js.pull_subscribe(FIRED_FILTER, durable=CONSUMER, stream=TIMER_STREAM, config=config)
        self._subscriptions.append(subscription)  # unsubscribed on stop, or the client's drain would wait for it
        while True:
            for msg in await pull(subscription, _BATCH, "firings", log):
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        """Deposit the work of one firing (once, whoever else handles it), then ack it."""
        fired_at = msg.metadata.timestamp.timestamp()
        added_id = (msg.headers or {}).get(DEFINITION_HEADER, "")
        if added_id not in self.schedules.definitions:
            await self._catch_up()  # another scheduler may have set the timer from an event not read here yet
        added = self.schedules.firing(added_id, fired_at)
        if added is None:
            log.info("firing on %s at %.3f deposits nothing (schedule removed or unknown)", msg.subject, fired_at)
            await msg.ack_sync()
            return
        try:
            if added.configuration is not None:  # a scheduled configuration: a run, not a work
                run_id = sch.firing_id(added.id, fired_at)
                outcome = await self._client.start_scheduled_run(added.configuration, run_id)
                log.info("schedule %s fired: run %s of %s %s", added.name, run_id, added.configuration, outcome)
                await msg.ack_sync()
                return
            work_id = await self._deposit(added, fired_at)
        except UNAVAILABLE as error:
            log.warning("firing of %s not deposited yet (%s); it will be redelivered", added.name, error)
            await msg.nak(delay=2)
            return
        except WorkflowError as error:
            log.error("firing of schedule %s at %.3f cannot be deposited: %s", added.name, fired_at, error)
            await msg.term()
            return
        log.info("schedule %s fired: work %s", added.name, work_id)
        await msg.ack_sync()

    async def _deposit(self, added: sch.ScheduleAdded, fired_at: float) -> str:
        work = sch.firing_work(added, fired_at)
        assert work.id is not None
        await self._buckets.ensure(BucketKey(work.pipeline, work.site, work.priority))
        event = ev.Deposited(id=work.id, work_id=work.id, pipeline=work.pipeline, time=time.time(),
                             by=sch.schedule_user(added.name), work=work)
        try:
            await self._client.append_durably(event, 0, patience=30)
        except ConflictError:
            log.debug("work %s of schedule %s was deposited already", work.id, added.name)
        return work.id

    async def _catch_up(self) -> None:
        """Wait (a while) until this scheduler has read every schedule event logged so far."""
        target = await last_schedule_sequence(self._client.nc)
        deadline = time.monotonic() + _CATCH_UP
        while self.position < target and time.monotonic() < deadline:
            self._read.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._read.wait(), deadline - time.monotonic())


async def run_scheduler(url: str, stop: asyncio.Event, *, replicas: int | None = None, **connect_options: Any) -> None:
    """Run a scheduler until ``stop`` is set (``workflow server`` runs one).

    On a NATS server without message schedules (before 2.14) it says so once and stays
    idle: the rest of the system runs, schedules are recorded but do not fire. Any other
    failure (a new cluster still electing the stream's leader answers 503, NATS away) is
    logged and the scheduler starts again from the log, which is safe: timers are set
    only where they differ, and a firing deposits with the CAS.
    """
    async with Client(url, name=connect_options.pop("name", "workflow-scheduler"), **connect_options) as client:

        async def run() -> None:
            try:
                await ensure_timer_stream(client.nc, replicas=replicas)
            except WorkflowError as error:
                log.error("schedules will not fire: the timer stream %s could not be made (%s); "
                          "they need nats-server >= 2.14", TIMER_STREAM, error)
                await stop.wait()
                return
            await Scheduler(client).run(stop)

        await restarting("scheduler", run, stop, log)
