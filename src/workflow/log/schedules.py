"""Schedules in the log: adding, removing and listing them, and the server's timers.

**Definitions are events in the log.** ``workflow schedule add`` appends a
``ScheduleAdded`` on ``wf._schedule.<name>.added``, ``rm`` a ``ScheduleRemoved`` on
``….removed``, each with the same CAS as a work's events (expected last sequence over
``wf._schedule.<name>.>``): two operators adding one name at once, or removing it twice,
cannot both succeed. Listing reads the last event of every schedule subject at once
(a direct get ``multi_last``), so it needs neither the projector nor a scan of the log.

**Timers are the NATS server's** (message schedules, ADR-51, nats-server >= 2.14 for
``@every`` and cron): one message on ``wfsched.timer.<name>`` carrying ``Nats-Schedule``,
which the server fires as a copy on ``wfsched.fired.<name>``. They live in a stream of
their own, ``WORKFLOW_SCHEDULES``, and not in the log: enabling ``allow_msg_schedules``
on a stream turns on rollups and turns off ``deny_purge`` (the server does it, it cannot
be refused), and on the log that would let any client allowed to publish an event purge
the whole history with one ``Nats-Rollup`` header. The timer stream holds nothing that
is not rebuilt from the log, only the ``server`` role writes it, and it is a work queue:
a firing is removed once the scheduler (:mod:`workflow.followers.scheduler`) deposited its work.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import nats.aio.client
from nats.aio.msg import Msg

from workflow.core import schedules as sch
from workflow.core.errors import ConflictError, NotFoundError, ValidationError
from workflow.core.subjects import STREAM
from workflow.core.work import Work, check_site
from workflow.log.gateway import LogGateway, last_message
from workflow.log.inbox import Inbox
from workflow.log.streams import StreamApplied, apply_stream

#: The stream of the server's timers and their firings (never the log itself: see above).
TIMER_STREAM = "WORKFLOW_SCHEDULES"
TIMER_PREFIX = sch.TIMER_PREFIX
#: The header that ties a timer, and each of its firings, to the ``ScheduleAdded`` it serves.
DEFINITION_HEADER = "Workflow-Schedule"
#: Schedules listed at most by one ``ls`` (a direct get batch).
LIST_LIMIT = 10_000

TIMER_STREAM_CONFIG: dict[str, Any] = {
    "name": TIMER_STREAM,
    "description": "workflow schedules: the NATS server's timers and their firings (rebuilt from the log).",
    "subjects": [f"{TIMER_PREFIX}.>"],
    "retention": "workqueue",  # a firing is removed once its work is deposited
    "storage": "file",
    "num_replicas": 1,
    "max_msgs": -1,
    "max_bytes": -1,
    "max_age": 0,  # a max_age would delete the timers themselves
    "discard": "old",
    "allow_direct": True,
    "allow_msg_schedules": True,
    "allow_rollup_hdrs": True,  # implied by allow_msg_schedules (stated, so the check agrees)
    "deny_purge": False,  # idem: a removed schedule's timer is purged
    "deny_delete": True,
}


def timer_subject(name: str) -> str:
    return f"{TIMER_PREFIX}.timer.{name}"


def fired_subject(name: str) -> str:
    return f"{TIMER_PREFIX}.fired.{name}"


FIRED_FILTER = f"{TIMER_PREFIX}.fired.>"


async def ensure_timer_stream(nc: nats.aio.client.Client, *, replicas: int | None = None) -> StreamApplied:
    """Create the timer stream if missing (idempotent; a differing one is reported)."""
    return await apply_stream(nc, TIMER_STREAM_CONFIG, replicas=replicas)


class Logged(NamedTuple):
    """A schedule event as stored: its stream sequence and the server's time."""

    seq: int
    logged: float
    event: sch.AnyScheduleEvent


def server_time(stamp: str) -> float:
    """Unix seconds of a JetStream time stamp (RFC 3339 with up to nanoseconds)."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


def _logged(reply: Msg) -> Logged | None:
    headers = reply.headers or {}
    if headers.get("Status") is not None:
        return None
    try:
        event = sch.decode(reply.data)
    except ValidationError:
        return None  # not a schedule event (a forged message): the schedule is as before
    return Logged(int(headers["Nats-Sequence"]), server_time(headers["Nats-Time-Stamp"]), event)


async def head(nc: nats.aio.client.Client, name: str) -> tuple[int, Logged | None]:
    """The sequence of the last message on a schedule's subjects (0: none), and its event."""
    return await _last(nc, sch.name_filter(name))


async def last_schedule_sequence(nc: nats.aio.client.Client) -> int:
    """The sequence of the last schedule event in the log (0: none yet)."""
    seq, _ = await _last(nc, f"{sch.SCHEDULE_PREFIX}.>")
    return seq


async def _last(nc: nats.aio.client.Client, subjects: str) -> tuple[int, Logged | None]:
    msg = await last_message(nc, subjects)
    if msg is None:
        return 0, None
    return int((msg.headers or {})["Nats-Sequence"]), _logged(msg)


async def _append(gateway: LogGateway, event: sch.ScheduleEvent, expected: int) -> int:
    """Append a schedule event if the schedule's last sequence is still ``expected``."""
    try:
        return await gateway.append_at(sch.event_subject(event), sch.encode(event), msg_id=event.id,
                                       expected_seq=expected, over=sch.name_filter(event.name),
                                       what=type(event).__name__)
    except ConflictError:
        raise ConflictError(f"schedule {event.name} changed meanwhile; nothing was recorded, try again") from None


async def add(
    gateway: LogGateway, name: str, work: Work, spec: str, *, configuration: str | None = None,
    timezone: str | None = None,
) -> sch.ScheduleAdded:
    """Record a new schedule: from its first firing on, each deposits one copy of ``work``
    (or, with ``configuration``, starts a run of that pipeline configuration). A cron's
    fields are read in ``timezone`` (an IANA name; None: UTC); ``@every`` takes no zone.

    Refused (ConflictError) if a schedule of that name is in force: remove it first.
    """
    name = sch.check_name(name)
    timezone = sch.check_timezone(timezone)
    if timezone is not None and spec.startswith("@every"):
        raise ValidationError("timezone", f"a time zone applies to a cron, not to {spec!r} (an interval has none)")
    check_site(work.site)  # as at deposit: each firing deposits this work
    if work.precursors:
        raise ValidationError("precursors", "a scheduled work cannot wait for other works")
    seq, last = await head(gateway.nc, name)
    if last is not None and isinstance(last.event, sch.ScheduleAdded):
        raise ConflictError(
            f"schedule {name} exists ({last.event.schedule}, {last.event.work.pipeline}); "
            f"remove it first with `workflow schedule rm {name}`"
        )
    template = Work(**{**_fields(work), "id": None, "status": "created", "user": sch.schedule_user(name)})
    event = sch.ScheduleAdded(name=name, time=time.time(), by=gateway.name, schedule=spec, work=template,
                              configuration=configuration, timezone=timezone)
    await _append(gateway, event, seq)
    return event


async def remove(gateway: LogGateway, name: str, reason: str | None = None) -> sch.ScheduleRemoved:
    """Record that a schedule is removed: it fires no more. NotFoundError if none is in force."""
    seq, last = await head(gateway.nc, name)
    if last is None or not isinstance(last.event, sch.ScheduleAdded):
        raise NotFoundError(f"no schedule named {name!r} (see `workflow schedule ls`)")
    event = sch.ScheduleRemoved(name=name, time=time.time(), by=gateway.name, added=last.event.id, reason=reason)
    await _append(gateway, event, seq)
    return event


async def current(nc: nats.aio.client.Client) -> list[sch.Definition]:
    """The schedules in force, by name: the last event of every schedule subject, at once."""
    inbox = await Inbox.open(nc, nc.new_inbox())
    found: list[Logged] = []
    try:
        request = {"multi_last": [f"{sch.SCHEDULE_PREFIX}.>"], "batch": LIST_LIMIT}
        await nc.publish(f"$JS.API.DIRECT.GET.{STREAM}", json.dumps(request).encode(), reply=inbox.subject)
        while True:
            reply = await inbox.next(timeout=5)
            if (reply.headers or {}).get("Status") is not None:
                break  # 204: end of the batch; 404: no schedule at all
            logged = _logged(reply)
            if logged is not None:
                found.append(logged)
    finally:
        await inbox.close()
    folded = sch.Schedules()
    for logged in sorted(found):
        folded.observe(logged.event, logged.logged)
    return folded.current()


def _fields(work: Work) -> dict[str, Any]:
    return msgspec.structs.asdict(work)
