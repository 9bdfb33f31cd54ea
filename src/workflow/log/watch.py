"""Hearing the pipelines a client withdraws from: their cancels and their deposits.

A client subscribes (core NATS) to ``wf.<pipeline>.*.cancelled`` and to the queue subjects
of every pipeline it withdraws from, once each, before its first pull:

- a **cancel** of a work held here stops it as soon as the cancel is in the log (the lease
  is lost and its queue message termed); a cancel heard but never stored (its CAS lost a
  race) changes nothing;
- a **deposit** (or re-queue) tells the buckets that a bucket found empty is worth asking
  again (:mod:`workflow.log.buckets`, drained buckets), and wakes whoever listens: a worker
  asleep on empty buckets.

Bucket claims (:mod:`workflow.log.claims`), filtered claims (:mod:`workflow.log.filtered`)
and the worker's loop all listen to this one watch: each event reaches a process once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import nats.aio.subscription
import nats.errors
from nats.aio.msg import Msg

from workflow.core import events as ev
from workflow.core.errors import WorkflowError
from workflow.core.subjects import PREFIX, BucketKey, bucket_from_filter, work_id_of
from workflow.log.buckets import Buckets
from workflow.log.gateway import UNAVAILABLE, LogGateway
from workflow.log.leases import Leases

log = logging.getLogger("workflow.client")

#: Pauses (s) while a cancel heard on core NATS is not yet the head in the log: after
#: them it is taken as refused by the stream (the heartbeat's head check is the backstop).
CANCEL_CONFIRM_PAUSES = (0.02, 0.1, 0.3, 1.0)
#: Why a head could not be read just now.
_HEAD_UNREAD: tuple[type[Exception], ...] = (*UNAVAILABLE, WorkflowError)


class Watch:
    """The cancels and deposits of the pipelines this client withdraws from."""

    def __init__(self, gateway: LogGateway, buckets: Buckets, leases: Leases) -> None:
        self._log = gateway
        self._buckets = buckets
        self._leases = leases
        self._watched: dict[str, list[nats.aio.subscription.Subscription]] = {}
        self._queued_listeners: list[Callable[[BucketKey], None]] = []

    async def pipelines(self, names: Iterable[str]) -> None:
        """Subscribe to the cancels and queue events of these pipelines (once each): before
        any pull, so a cancel of a work started here is never missed, and a bucket found
        empty is asked again as soon as work is queued in it."""
        nc = self._log.nc
        for name in names:
            if name not in self._watched:
                self._watched[name] = [
                    await nc.subscribe(f"{PREFIX}.{name}.*.cancelled", cb=self._on_cancel),
                    await nc.subscribe(f"{PREFIX}.{name}.*.queued.*.*", cb=self._on_queued),
                ]

    def on_queued(self, listener: Callable[[BucketKey], None]) -> None:
        """Call ``listener(bucket)`` whenever work is queued in a watched pipeline."""
        self._queued_listeners.append(listener)

    async def _on_queued(self, msg: Msg) -> None:
        """Work was queued: its bucket is no longer drained; the listeners hear of it."""
        parts = msg.subject.split(".")
        key = bucket_from_filter(".".join([*parts[:2], "*", *parts[3:]]))
        if key is not None:
            self._buckets.refilled(key)
            for listener in self._queued_listeners:
                listener(key)

    async def _on_cancel(self, msg: Msg) -> None:
        """A work was cancelled: if it is held here, stop it and term its message.

        Only once the log has the cancel: core NATS hands every subscriber a publish that
        the stream then refuses (its CAS lost a race with our ``Started`` or outcome), and
        such a cancel never happened. The log may store it a moment after we hear it, so
        a head not yet past our own event is asked again briefly (the heartbeat's head
        check catches anything later)."""
        work_id = work_id_of(msg.subject)
        if work_id is None or self._leases.get(work_id) is None:
            return
        try:
            heard = ev.decode(msg.data).id
        except WorkflowError:  # not an event (anyone may publish on wf.>): nothing was cancelled
            return
        for pause in CANCEL_CONFIRM_PAUSES:
            lease = self._leases.get(work_id)
            if lease is None:
                return
            try:
                head = await self._log.head(work_id, lease.running.pipeline)
            except _HEAD_UNREAD:  # a slow or busy server: ask again after the pause
                await asyncio.sleep(pause)
                continue
            if head is not None and head.event.id == heard:
                break
            if head is None or head.seq != lease.head_seq:
                return  # something else happened to the work: the lease's own flow sees it
            await asyncio.sleep(pause)
        else:
            return  # never stored: the stream refused this cancel
        if self._leases.get(work_id) is lease:
            self._leases.lose(work_id, "cancelled")
            with contextlib.suppress(*UNAVAILABLE, nats.errors.Error):
                await lease.msg.term()
