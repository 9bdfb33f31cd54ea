"""The async client: deposit, withdraw, update, cancel, requeue, get and history.

Every write is one event appended to the log with per-work optimistic concurrency:
``Nats-Expected-Last-Subject-Sequence`` over ``wf.<pipeline>.<work_id>.>`` names the
last event the writer saw, and the server refuses the write (error 10071) if anything
happened to that work since. That single rule keeps each work's history linear: two
workers cannot both start a work, a zombie worker cannot report after its work was handed
on, a cancel cannot race a start. Refusals surface as :class:`ConflictError`.

A withdrawn work is held by a :class:`Lease`: the client heartbeats its queue message
(``in_progress``) every third of the bucket's AckWait, so it is never handed to another
worker while this process lives, and notices within one heartbeat if the work was
cancelled or handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from workflow.core import events as ev
from workflow.log import jsapi
from workflow.log.buckets import Buckets, BucketStats
from workflow.core import session
from workflow.core.errors import (
    ConflictError,
    ConnectionFailedError,
    NotFoundError,
    ServerTooOldError,
    ValidationError,
    WorkflowError,
)
from workflow.core.fold import fold
from workflow.core.ids import new_id, worker_name
from workflow.core.settings import MAX_RETRY_DELAY, lease_seconds, nats_url, retry_backoff_seconds
from workflow.core.subjects import STREAM, BucketKey, event_subject, work_filter
from workflow.core.work import Work, validate_field

log = logging.getLogger("workflow.client")

_PUBLISH_CHUNK = 512



class Recorded(NamedTuple):
    """One event as stored in the log, with its stream sequence."""

    seq: int
    subject: str
    event: ev.AnyEvent


@dataclass
class Lease:
    """A withdrawn work held by this client: its queue message and the last event seen."""

    work: Work
    msg: Msg
    bucket: BucketKey
    queue_seq: int
    head_seq: int
    base_attempt: int
    ack_wait: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lost_reason: str | None = None
    heartbeat: asyncio.Task | None = None

    @property
    def attempts_in_chain(self) -> int:
        """Attempts made since the work was (re)queued: what ``retries`` bounds."""
        return self.work.attempt - self.base_attempt


def retry_delay(attempt_in_chain: int) -> float:
    """Exponential backoff: base, 2×base, 4×base … capped at MAX_RETRY_DELAY."""
    return min(retry_backoff_seconds() * 2 ** max(attempt_in_chain - 1, 0), MAX_RETRY_DELAY)


class Client:
    """One connection to the workflow system (see :func:`connect`)."""

    def __init__(self, url: str | None = None, *, lease: float | None = None, **nats_options: Any):
        self.url = nats_url(url)
        self._options = nats_options
        self._lease_seconds = lease if lease is not None else lease_seconds()
        self._nc: nats.aio.client.Client | None = None
        self._js: nats.js.JetStreamContext | None = None
        self._buckets: Buckets | None = None
        self._leases: dict[str, Lease] = {}
        self._token: contextvars.Token | None = None
        self._rotation = 0
        self.name = nats_options.pop("name", None) or worker_name()

    # -- connection -------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def nc(self) -> nats.aio.client.Client:
        if self._nc is None:
            raise WorkflowError("client is not connected: use `async with workflow.connect() as client:`")
        return self._nc

    async def open(self) -> Client:
        async def on_error(error: Exception) -> None:
            log.debug("nats: %s", error)

        try:
            self._nc = await nats.connect(
                servers=[self.url],
                name=self.name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=2,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                **self._options,
            )
        except (OSError, asyncio.TimeoutError, nats.errors.Error) as error:
            raise ConnectionFailedError(
                f"cannot reach NATS at {self.url} ({type(error).__name__}: {error}). "
                "Start one with `workflow server`, or point to yours with --nats URL "
                "or WORKFLOW_NATS_URL."
            ) from None
        # nats-py applies one setting to the first connect and to reconnects; -1 at first
        # connect would hang forever on a wrong URL, so "reconnect forever" (a worker must
        # ride out a server restart) is set once connected.
        self._nc.options["max_reconnect_attempts"] = -1
        self._nc.options["reconnect_time_wait"] = 1
        try:
            jsapi.check_server_version(self._nc, self.url)
            info = await jsapi.stream_info(self._nc)
        except WorkflowError:
            await self._nc.close()
            raise
        self._js = self._nc.jetstream(timeout=5)
        stream_limit = info["config"].get("max_msg_size", -1)
        limit = min(self._nc.max_payload, stream_limit) if stream_limit > 0 else self._nc.max_payload
        self._max_payload = limit - 1024  # room for the headers
        self._buckets = Buckets(self._nc, self._lease_seconds)
        return self

    async def close(self, *, release: bool = True) -> None:
        """Give back every work still held (so it runs again soon), then disconnect."""
        if self._nc is None:
            return
        if release:
            for lease in list(self._leases.values()):
                with contextlib.suppress(Exception):
                    await self.release(lease.work)
        for lease in list(self._leases.values()):
            self._drop(lease)
        with contextlib.suppress(Exception):
            await self._nc.drain()
        self._nc = None

    async def __aenter__(self) -> Client:
        await self.open()
        self._token = session.bind(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            session.unbind(self._token)
            self._token = None
        await self.close()

    # -- reading the log --------------------------------------------------------------

    async def head(self, work_id: str, pipeline: str | None = None) -> Recorded | None:
        """The last event of a work (its current head), or None if it does not exist."""
        reply = await self.nc.request(
            f"$JS.API.DIRECT.GET.{STREAM}",
            json.dumps({"last_by_subj": work_filter(work_id, pipeline)}).encode(),
            timeout=5,
        )
        return self._recorded(reply)

    async def history_records(self, work_id: str, pipeline: str | None = None) -> list[Recorded]:
        """Every event of a work, in order, with sequences (direct batch gets)."""
        records: list[Recorded] = []
        subject = work_filter(work_id, pipeline)
        seq = 1
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            while True:
                request = {"seq": seq, "next_by_subj": subject, "batch": 256}
                await self.nc.publish(f"$JS.API.DIRECT.GET.{STREAM}", json.dumps(request).encode(), reply=inbox)
                got = 0
                while True:
                    reply = await sub.next_msg(timeout=5)
                    status = reply.headers.get("Status") if reply.headers else None
                    if status is not None:
                        break  # 204 end of batch, or 404 nothing (more)
                    record = self._recorded(reply)
                    assert record is not None
                    records.append(record)
                    seq = record.seq + 1
                    got += 1
                if got < 256 or reply.headers.get("Nats-Num-Pending") in ("0", None):
                    break
        finally:
            await sub.unsubscribe()
        return records

    async def history(self, work_id: str) -> list[ev.AnyEvent]:
        """Every event of a work, in order: how it got where it is."""
        records = await self.history_records(work_id)
        if not records:
            raise NotFoundError(f"no work with id {work_id}")
        return [record.event for record in records]

    async def get(self, work_id: str) -> Work:
        """The current state of a work, folded from its events in the log."""
        state = fold(await self.history(work_id))
        assert state is not None
        return state

    @staticmethod
    def _recorded(reply: Msg) -> Recorded | None:
        headers = reply.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status is not None:
            raise WorkflowError(f"direct get failed: {status} {headers.get('Description', '')}")
        return Recorded(int(headers["Nats-Sequence"]), headers["Nats-Subject"], ev.decode(reply.data))

    # -- writing the log --------------------------------------------------------------

    async def append(self, event: ev.AnyEvent, expected_seq: int) -> int:
        """Append ``event`` if the work's last event is still ``expected_seq``; its sequence.

        Raises ConflictError if the work changed meanwhile. A retried append that had in
        fact landed (same event id at the head) counts as landed, not as a conflict.
        """
        data = ev.encode(event, limit=self._max_payload)
        headers = {
            "Nats-Msg-Id": event.id,
            "Nats-Expected-Last-Subject-Sequence": str(expected_seq),
            "Nats-Expected-Last-Subject-Sequence-Subject": work_filter(event.work_id, event.pipeline),
        }
        try:
            ack = await self._js.publish(event_subject(event), data, headers=headers)  # type: ignore[union-attr]
        except nats.js.errors.APIError as error:
            if error.err_code != jsapi.WRONG_LAST_SEQUENCE:
                raise WorkflowError(f"the log refused {type(event).__name__}: {error.description}") from None
            head = await self.head(event.work_id, event.pipeline)
            if head is not None and head.event.id == event.id:
                return head.seq
            raise ConflictError(
                f"work {event.work_id} changed since it was read "
                f"(now: {type(head.event).__name__ if head else 'nothing'}); "
                f"{type(event).__name__} was not recorded"
            ) from None
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
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
                    nats.js.errors.NoStreamResponseError, asyncio.TimeoutError, nats.errors.StaleConnectionError,
                    nats.errors.ConnectionReconnectingError) as error:
                if time.monotonic() + delay > deadline:
                    raise WorkflowError(f"could not record {type(event).__name__} of {event.work_id}: {error!r}") from None
                log.warning("NATS unavailable (%s); retrying %s of %s in %.1fs",
                            type(error).__name__, type(event).__name__, event.work_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- deposit ----------------------------------------------------------------------

    async def deposit(self, works: Work | Iterable[Work]) -> list[str]:
        """Put works in their buckets; returns their ids (made here if not set).

        Depositing a work whose id already exists is a no-op: the first event of a work is
        appended only if the work has no event yet, so a retried deposit never duplicates.
        """
        batch = [works] if isinstance(works, Work) else list(works)
        for work in batch:
            if not isinstance(work, Work):
                raise ValidationError("work", f"expected a Work, got {type(work).__name__}")
            if work.id is None:
                work.id = new_id()
            work.status = "queued"
        await self._buckets.ensure_all(BucketKey(w.pipeline, w.site, w.priority) for w in batch)  # type: ignore[union-attr]
        now = time.time()
        for start in range(0, len(batch), _PUBLISH_CHUNK):
            chunk = batch[start : start + _PUBLISH_CHUNK]
            await asyncio.gather(*(self._deposit_one(work, now) for work in chunk))
        return [work.id for work in batch]  # type: ignore[misc]

    async def _deposit_one(self, work: Work, now: float) -> None:
        event = ev.Deposited(id=work.id, work_id=work.id, pipeline=work.pipeline, time=now, by=self.name, work=work)
        try:
            await self.append_durably(event, 0, patience=30)
        except ConflictError:
            log.info("work %s already deposited; nothing to do", work.id)

    # -- withdraw ---------------------------------------------------------------------

    async def withdraw(
        self,
        pipeline: str | Sequence[str],
        *,
        site: str | None = None,
        priority: int | None = None,
        timeout: float = 0.0,
        poll: float = 0.5,
    ) -> Work | None:
        """The next work of these pipelines, now ``running`` under a lease held here.

        Highest priority first, then oldest deposit (within each bucket). ``site`` and
        ``priority`` narrow the buckets. Waits up to ``timeout`` seconds for one (polling
        every ``poll`` s); None if there is none.
        """
        pipelines = [pipeline] if isinstance(pipeline, str) else list(pipeline)
        for name in pipelines:
            validate_field("pipeline", name)
        if site is not None:
            validate_field("site", site)
        if priority is not None:
            validate_field("priority", priority)
        deadline = time.monotonic() + timeout
        while True:
            work = await self._withdraw_once(pipelines, site, priority)
            if work is not None or time.monotonic() >= deadline:
                return work
            await asyncio.sleep(min(poll, max(deadline - time.monotonic(), 0)))

    async def _withdraw_once(self, pipelines: list[str], site: str | None, priority: int | None) -> Work | None:
        keys = await self._buckets.select(pipelines, site, priority)  # type: ignore[union-attr]
        # Equal priorities are asked in a rotating order, so no bucket starves another.
        self._rotation += 1
        by_priority: dict[int, list[BucketKey]] = {}
        for key in keys:
            by_priority.setdefault(key.priority, []).append(key)
        for prio in sorted(by_priority, reverse=True):
            group = by_priority[prio]
            shift = self._rotation % len(group)
            for key in group[shift:] + group[:shift]:
                while (msg := await self._buckets.next_message(key)) is not None:  # type: ignore[union-attr]
                    work = await self._start(key, msg)
                    if work is not None:
                        return work
        return None

    async def _start(self, key: BucketKey, msg: Msg) -> Work | None:
        """Turn a delivered queue message into a started work, or discard it as stale."""
        meta = msg.metadata
        queue_seq = meta.sequence.stream
        queued = ev.decode(msg.data)
        if not isinstance(queued, (ev.Deposited, ev.Requeued)):
            await msg.term()
            return None
        snapshot = queued.work
        base = snapshot.attempt
        if meta.num_delivered == 1:
            expected, previous_attempt = queue_seq, base
        else:
            head = await self.head(queued.work_id, queued.pipeline)
            if head is None:  # cannot happen in an immutable log; never start blindly
                return None
            event = head.event
            if head.seq == queue_seq:
                expected, previous_attempt = queue_seq, base
            elif isinstance(event, ev.Started) and event.queue_seq == queue_seq:
                # The worker of that attempt vanished: its lease ran out. Record the loss.
                lost_attempt = event.attempt
                will_retry = lost_attempt - base < snapshot.retries + 1
                failed = ev.Failed(
                    work_id=queued.work_id, pipeline=queued.pipeline, time=time.time(), by=self.name,
                    attempt=lost_attempt, reason="lost", will_retry=will_retry, queue_seq=queue_seq,
                    error=f"worker {event.by} stopped heartbeating attempt {lost_attempt} (lease expired)",
                )
                try:
                    expected = await self.append(failed, head.seq)
                except ConflictError:
                    return None
                if not will_retry:
                    await msg.term()
                    return None
                previous_attempt = lost_attempt
            elif isinstance(event, ev.Failed) and event.will_retry and event.queue_seq == queue_seq:
                expected, previous_attempt = head.seq, event.attempt
            else:
                await msg.term()  # cancelled, finished, or re-queued by a newer message
                return None
        now = time.time()
        started = ev.Started(
            work_id=queued.work_id, pipeline=queued.pipeline, time=now, by=self.name,
            attempt=previous_attempt + 1, queue_seq=queue_seq, host=self.name.rsplit(":", 1)[0],
        )
        try:
            head_seq = await self.append(started, expected)
        except ConflictError:
            if meta.num_delivered == 1:
                await msg.term()  # the work changed before its first start: this message is stale
            return None
        work = msgspec.structs.replace(
            snapshot, id=queued.work_id, status="running", attempt=started.attempt, start=now, stop=None
        )
        lease = Lease(
            work=work, msg=msg, bucket=key, queue_seq=queue_seq, head_seq=head_seq, base_attempt=base,
            ack_wait=self._buckets.ack_wait(key),  # type: ignore[union-attr]
        )
        lease.heartbeat = asyncio.create_task(self._heartbeat(lease), name=f"lease-{work.id}")
        self._leases[work.id] = lease  # type: ignore[index]
        return work

    # -- leases -----------------------------------------------------------------------

    def lease(self, work: Work | str) -> Lease | None:
        """The lease this client holds on a work, if any."""
        return self._leases.get(work if isinstance(work, str) else work.id)  # type: ignore[arg-type]

    async def _heartbeat(self, lease: Lease) -> None:
        """Keep the lease alive; notice a cancel or a hand-over within one beat."""
        interval = max(lease.ack_wait / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                await lease.msg.in_progress()
                head = await self.head(lease.work.id, lease.work.pipeline)  # type: ignore[arg-type]
            except Exception as error:  # NATS away: keep trying; the lease may still hold
                log.warning("heartbeat of %s failed: %r", lease.work.id, error)
                continue
            if head is not None and head.seq != lease.head_seq:
                cancelled = isinstance(head.event, ev.Cancelled)
                lease.lost_reason = "cancelled" if cancelled else f"superseded by {type(head.event).__name__}"
                if cancelled:
                    with contextlib.suppress(Exception):
                        await lease.msg.term()
                lease.lost.set()
                self._leases.pop(lease.work.id, None)  # type: ignore[arg-type]
                return

    def _drop(self, lease: Lease) -> None:
        self._leases.pop(lease.work.id, None)  # type: ignore[arg-type]
        if lease.heartbeat is not None and lease.heartbeat is not asyncio.current_task():
            lease.heartbeat.cancel()

    def _held(self, work: Work) -> Lease:
        lease = self._leases.get(work.id)  # type: ignore[arg-type]
        if lease is None:
            raise ConflictError(f"work {work.id} is not held by this client (never withdrawn here, or lost)")
        return lease

    # -- outcomes ---------------------------------------------------------------------

    async def succeed(
        self,
        work: Work,
        results: dict[str, Any] | None = None,
        products: list[str] | None = None,
        plots: list[str] | None = None,
        *,
        patience: float = 3600.0,
    ) -> None:
        """Record that a held work succeeded, then ack its queue message."""
        lease = self._held(work)
        event = ev.Succeeded(
            work_id=work.id, pipeline=work.pipeline, time=time.time(), by=self.name,  # type: ignore[arg-type]
            attempt=lease.work.attempt, results=results, products=products, plots=plots,
        )
        await self._finish(lease, event, patience)
        with contextlib.suppress(Exception):
            await lease.msg.ack_sync()
        self._apply_outcome(work, event)

    async def fail(
        self,
        work: Work,
        reason: ev.FailureReason,
        error: str | None = None,
        traceback: str | None = None,
        *,
        retry: bool = True,
        results: dict[str, Any] | None = None,
        products: list[str] | None = None,
        plots: list[str] | None = None,
        patience: float = 3600.0,
    ) -> ev.Failed:
        """Record a failed attempt; retried later (``nak`` with backoff) if attempts remain."""
        lease = self._held(work)
        chain_attempt = lease.attempts_in_chain
        will_retry = retry and chain_attempt < lease.work.retries + 1
        event = ev.Failed(
            work_id=work.id, pipeline=work.pipeline, time=time.time(), by=self.name,  # type: ignore[arg-type]
            attempt=lease.work.attempt, reason=reason, will_retry=will_retry, queue_seq=lease.queue_seq,
            error=error, traceback=traceback, retry_in=retry_delay(chain_attempt) if will_retry else None,
            results=results, products=products, plots=plots,
        )
        await self._finish(lease, event, patience)
        with contextlib.suppress(Exception):
            if will_retry:
                await lease.msg.nak(delay=event.retry_in)
            else:
                await lease.msg.term()
        self._apply_outcome(work, event)
        return event

    async def release(self, work: Work, reason: str = "worker stopped at once") -> ev.Failed:
        """Give a held work back now (interrupted attempt; it is retried at once if it may)."""
        lease = self._held(work)
        will_retry = lease.attempts_in_chain < lease.work.retries + 1
        event = ev.Failed(
            work_id=work.id, pipeline=work.pipeline, time=time.time(), by=self.name,  # type: ignore[arg-type]
            attempt=lease.work.attempt, reason="interrupted", will_retry=will_retry,
            queue_seq=lease.queue_seq, error=reason, retry_in=0.0 if will_retry else None,
        )
        await self._finish(lease, event, patience=10)
        with contextlib.suppress(Exception):
            await (lease.msg.nak() if will_retry else lease.msg.term())
        return event

    async def _finish(self, lease: Lease, event: ev.AnyEvent, patience: float) -> None:
        try:
            await self.append_durably(event, lease.head_seq, patience=patience)
        except ConflictError:
            # Cancelled or handed on: the message may be another worker's now, so it is
            # neither acked nor termed here; redelivery sorts out stale deliveries.
            self._drop(lease)
            raise
        self._drop(lease)

    @staticmethod
    def _apply_outcome(work: Work, event: ev.Succeeded | ev.Failed) -> None:
        """Mirror the recorded outcome on the caller's Work object."""
        state = fold([event], msgspec.structs.replace(work, status="running"))
        for name in ("status", "results", "products", "plots", "stop", "attempt"):
            setattr(work, name, getattr(state, name))

    async def update(self, work: Work) -> None:
        """Record the outcome set on a withdrawn work: ``status`` success or failure.

        The seed's ``work.update()``. A failure with attempts left is retried later.
        Raises ConflictError if the work was cancelled or handed to another worker.
        """
        if work.id is None:
            raise ValidationError("id", "this work was never deposited")
        if work.status == "success":
            await self.succeed(work, work.results, work.products, work.plots)
        elif work.status == "failure":
            results = dict(work.results or {})
            error = results.pop("error", None)
            await self.fail(work, "reported", None if error is None else str(error), results=results or None,
                            products=work.products, plots=work.plots)
        else:
            raise ValidationError("status", f"update records an outcome: set 'success' or 'failure', not {work.status!r}")

    # -- operator actions -------------------------------------------------------------

    async def buckets(self) -> list[BucketStats]:
        """Every bucket with how many works wait in it and how many are held by workers."""
        return await self._buckets.stats()  # type: ignore[union-attr]

    async def cancel(self, work_id: str, reason: str | None = None) -> ev.Cancelled:
        """Cancel a work: a queued work never runs; a running one is stopped at its next
        heartbeat. Raises ConflictError if it already finished, NotFoundError if unknown."""
        for _ in range(10):
            head = await self.head(work_id)
            if head is None:
                raise NotFoundError(f"no work with id {work_id}")
            if ev.is_final(head.event):
                raise ConflictError(f"work {work_id} has already finished ({type(head.event).__name__}); nothing to cancel")
            event = ev.Cancelled(work_id=work_id, pipeline=head.event.pipeline, time=time.time(), by=self.name, reason=reason)
            try:
                await self.append(event, head.seq)
            except ConflictError:
                continue  # something happened meanwhile: look again
            lease = self._leases.get(work_id)
            if lease is not None:
                lease.lost_reason = "cancelled"
                lease.lost.set()
                self._drop(lease)
                with contextlib.suppress(Exception):
                    await lease.msg.term()
            return event
        raise ConflictError(f"work {work_id} kept changing; cancel not recorded")

    async def requeue(
        self, work_id: str, *, priority: int | None = None, site: str | None = None, reason: str | None = None
    ) -> Work:
        """Put a queued or finished work (back) in a bucket, optionally at a new priority or
        site: re-prioritising, or retrying a failed or cancelled work by hand. A running work
        is refused (cancel it first). The old queue message becomes stale."""
        records = await self.history_records(work_id)
        if not records:
            raise NotFoundError(f"no work with id {work_id}")
        state = fold(r.event for r in records)
        assert state is not None
        if state.status == "running":
            raise ConflictError(f"work {work_id} is running; cancel it before re-queueing")
        snapshot = msgspec.structs.replace(
            state, status="queued", start=None, stop=None,
            results=None if state.finished else state.results,
            priority=priority if priority is not None else state.priority,
            site=site if site is not None else state.site,
        )
        await self._buckets.ensure(BucketKey(snapshot.pipeline, snapshot.site, snapshot.priority))  # type: ignore[union-attr]
        event = ev.Requeued(work_id=work_id, pipeline=state.pipeline, time=time.time(), by=self.name,
                            work=snapshot, reason=reason)
        await self.append(event, records[-1].seq)
        return snapshot
