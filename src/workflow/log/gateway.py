"""Reading and writing the log: a work's head and history, and appends with per-work CAS.

Every write is one event appended with ``Nats-Expected-Last-Subject-Sequence`` over
``wf.<pipeline>.<work_id>.>``: it names the last event the writer saw, and the server
refuses the write (error 10071) if anything happened to that work since. That single rule
keeps each work's history linear; a refusal surfaces as :class:`ConflictError`. Every
other part of the client reads and writes the log through one :class:`LogGateway`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import NamedTuple, TypedDict

import msgspec
import nats.aio.client
import nats.errors
import nats.js
import nats.js.errors
from nats.aio.msg import Msg

from workflow.core import events as ev
from workflow.core.errors import ConflictError, NotFoundError, WorkflowError
from workflow.core.fold import fold
from workflow.core.subjects import STREAM, event_subject, work_filter
from workflow.core.work import Work
from workflow.log import jsapi
from workflow.log.inbox import Inbox
from workflow.log.requests import Requests

log = logging.getLogger("workflow.client")

#: The errors of a NATS server briefly away (restarting, failing over, a network blip):
#: an outcome is retried through them rather than dropped.
UNAVAILABLE: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.js.errors.NoStreamResponseError,
    asyncio.TimeoutError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
)

_BATCH = 256


class Recorded(NamedTuple):
    """One event as stored in the log, with its stream sequence."""

    seq: int
    subject: str
    event: ev.AnyEvent


class Envelope(TypedDict):
    """The fields every event of this client starts with: which work, when, and who."""

    work_id: str
    pipeline: str
    time: float
    by: str | None


class LogGateway:
    """The log as one connected client sees it: reads by direct get, appends with CAS.

    Holds what every append needs (the JetStream context, the largest event the server
    takes, the writer's name), so the parts built on it receive one object.
    """

    def __init__(self, nc: nats.aio.client.Client, max_payload: int, name: str) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=5)
        self.requests = Requests(nc)  # every append and head read: see workflow.log.requests
        self.max_payload = max_payload
        self.name = name

    def envelope(self, work_id: str, pipeline: str, now: float | None = None) -> Envelope:
        """The common fields of an event this client writes about a work, stamped now
        (or at ``now``, so a batch of deposits shares one time)."""
        return Envelope(work_id=work_id, pipeline=pipeline, time=time.time() if now is None else now, by=self.name)

    # -- reading -----------------------------------------------------------------------

    async def head(self, work_id: str, pipeline: str | None = None) -> Recorded | None:
        """The last event of a work (its current head), or None if it does not exist."""
        reply = await self.requests.request(
            f"$JS.API.DIRECT.GET.{STREAM}", json.dumps({"last_by_subj": work_filter(work_id, pipeline)}).encode()
        )
        return _recorded(reply)

    async def history_records(self, work_id: str, pipeline: str | None = None) -> list[Recorded]:
        """Every event of a work, in order, with sequences (direct gets in batches, so a
        long history costs a few round trips, not one per event)."""
        records: list[Recorded] = []
        subject = work_filter(work_id, pipeline)
        seq = 1
        inbox = await Inbox.open(self.nc, self.nc.new_inbox())
        try:
            while True:
                request = {"seq": seq, "next_by_subj": subject, "batch": _BATCH}
                await self.nc.publish(f"$JS.API.DIRECT.GET.{STREAM}", json.dumps(request).encode(), reply=inbox.subject)
                got = 0
                while True:
                    reply = await inbox.next(timeout=5)
                    headers = reply.headers or {}
                    if headers.get("Status") is not None:
                        break  # 204 end of batch, or 404 nothing (more)
                    record = _recorded(reply)
                    assert record is not None
                    records.append(record)
                    seq = record.seq + 1
                    got += 1
                if got < _BATCH or headers.get("Nats-Num-Pending") in ("0", None):
                    break
        finally:
            await inbox.close()
        return records

    async def history(self, work_id: str) -> list[ev.AnyEvent]:
        """Every event of a work, in order: how it got where it is."""
        records = await self.history_records(work_id)
        if not records:
            raise NotFoundError(f"no work with id {work_id}")
        return [record.event for record in records]

    async def get(self, work_id: str) -> Work:
        """The current state of a work, folded from its events in the log."""
        state = fold(await self.history(work_id), skip_refused=True)
        assert state is not None
        return state

    # -- writing -----------------------------------------------------------------------

    async def append(self, event: ev.AnyEvent, expected_seq: int) -> int:
        """Append ``event`` if the work's last event is still ``expected_seq``; its sequence.

        Raises ConflictError if the work changed meanwhile. A retried append that had in
        fact landed (same event id at the head) counts as landed, not as a conflict.
        """
        data = ev.encode(event, limit=self.max_payload)
        kind = type(event).__name__
        try:
            return await self.append_at(event_subject(event), data, msg_id=event.id, expected_seq=expected_seq,
                                        over=work_filter(event.work_id, event.pipeline), what=kind)
        except ConflictError:
            head = await self.head(event.work_id, event.pipeline)
            if head is not None and head.event.id == event.id:
                return head.seq
            raise ConflictError(
                f"work {event.work_id} changed since it was read "
                f"(now: {type(head.event).__name__ if head else 'nothing'}); {kind} was not recorded"
            ) from None

    async def append_at(self, subject: str, data: bytes, *, msg_id: str, expected_seq: int, over: str,
                        what: str) -> int:
        """Append ``data`` on ``subject`` if the last message on the subjects ``over`` is
        still ``expected_seq`` (0: none yet); its sequence. The one compare-and-set of the
        log, for a work's events and a schedule's alike: ConflictError when another write
        came first (error 10071, :data:`workflow.log.jsapi.ERRORS`), the error named
        otherwise (``the log refused <what>: …``). ``msg_id`` makes a retry idempotent."""
        headers = {
            "Nats-Msg-Id": msg_id,
            "Nats-Expected-Last-Subject-Sequence": str(expected_seq),
            "Nats-Expected-Last-Subject-Sequence-Subject": over,
        }
        try:
            reply = await self.requests.request(subject, data, headers=headers)
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        # The acknowledgement decoded by msgspec: nats-py's ``json.loads`` and ``PubAck``
        # dataclass were a visible part of each work's time in the worker's loop.
        ack = _ACK.decode(reply.data)
        if ack.error is not None:
            raise jsapi.error_of(msgspec.structs.asdict(ack.error), f"the log refused {what}")
        return ack.seq

    async def append_durably(self, event: ev.AnyEvent, expected_seq: int, *, patience: float = 3600.0) -> int:
        """``append``, retried through NATS outages for up to ``patience`` seconds.

        Used for outcomes: a finished work's result is never dropped because the server
        was briefly away (the old system's "work completed, but failed to update it").
        The event id makes retries idempotent.
        """
        deadline = time.monotonic() + patience
        delay = 0.2
        while True:
            try:
                return await self.append(event, expected_seq)
            except UNAVAILABLE as error:
                kind = type(event).__name__
                if time.monotonic() + delay > deadline:
                    raise WorkflowError(f"could not record {kind} of {event.work_id}: {error!r}") from None
                log.warning("NATS unavailable (%s); retrying %s of %s in %.1fs",
                            type(error).__name__, kind, event.work_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int | None = None
    description: str | None = None


class _PubAck(msgspec.Struct):
    """The stream's answer to a publish: the sequence stored, or why not."""

    seq: int = 0
    error: _ApiError | None = None


_ACK = msgspec.json.Decoder(_PubAck)


def found(reply: Msg) -> Msg | None:
    """A direct get's answer: the message, None for "no such message", or why it failed."""
    headers = reply.headers or {}
    status = headers.get("Status")
    if status == "404":
        return None
    if status is not None:
        raise WorkflowError(f"direct get failed: {status} {headers.get('Description', '')}")
    return reply


async def last_message(nc: nats.aio.client.Client, subjects: str, stream: str = STREAM) -> Msg | None:
    """The last message of ``stream`` on ``subjects`` (a filter), by direct get; None if none."""
    reply = await nc.request(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"last_by_subj": subjects}).encode(),
                             timeout=5)
    return found(reply)


def _recorded(reply: Msg) -> Recorded | None:
    """The event a direct get answered, None for "no such message", or why it failed."""
    msg = found(reply)
    if msg is None:
        return None
    headers = msg.headers or {}
    return Recorded(int(headers["Nats-Sequence"]), headers["Nats-Subject"], ev.decode(msg.data))
