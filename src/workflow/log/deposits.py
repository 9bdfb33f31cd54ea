"""Deposit: put works in their buckets, each with its first event.

The first event is appended against sequence 0 over the work's own subjects: "no event
exists for this work yet". So re-depositing an existing id can never create a second
work, whatever the ``Nats-Msg-Id`` duplicate window, and a retried deposit is safe.

A work with ``precursors``, or deposited with a delay, waits: its ``Deposited`` carries
``waits`` and lands off the queue subjects (:mod:`workflow.followers.resolver` releases it).
Each precursor must exist (its head is read) or come earlier in the same deposit, which
also rules out cycles; precursors that already succeeded are not waited for, and a work
left with nothing to wait for goes straight to its bucket. A work whose rule is not
``success`` (``config["if"]``: ``failure``, ``always``; :mod:`workflow.core.waits`) waits
for all its precursors whatever their state: the resolver reads their heads and judges.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from workflow.core import events as ev
from workflow.core.errors import ConflictError, ValidationError
from workflow.core.ids import new_id
from workflow.core.notify import check_webhook_key
from workflow.core.settings import webhooks
from workflow.core.subjects import BucketKey
from workflow.core.waits import check_condition, precursor_outcome
from workflow.core.work import Work, check_site
from workflow.log.buckets import Buckets
from workflow.log.gateway import LogGateway

log = logging.getLogger("workflow.client")

_TOKEN = re.compile(r"^[^.*>\s]+$")  # one subject token: what a work id can be
_IN_BATCH: Any = object()  # a precursor deposited earlier in the same call: it has not succeeded
#: Deposits published at once: enough to fill the pipe, few enough not to flood it.
PUBLISH_CHUNK = 512


async def deposit(
    gateway: LogGateway,
    buckets: Buckets,
    works: Work | dict[str, Any] | Iterable[Work | dict[str, Any]],
    *,
    not_before: float | None = None,
) -> list[str]:
    """Put works in their buckets, or make them wait; returns their ids (made here if not set).

    Depositing a work whose id already exists is a no-op: the first event of a work is
    appended only if the work has no event yet, so a retried deposit never duplicates.
    ``not_before`` (unix seconds) holds every work of the call back until then.

    A work may be given as its payload (a dict, as ``work.payload`` or JSON has it): a key
    the Work does not have is refused, like any bad value. So is a site this host does not
    know (``WORKFLOW_SITES``), and a webhook key this host's ``WORKFLOW_WEBHOOKS`` lacks
    (``notify.webhook.key``): the one place the site list is checked is here, where a
    work enters the log, so that every reader can read what the log accepted. Nothing of
    the call is deposited when any of its works is refused.
    """
    given = [works] if isinstance(works, (Work, dict)) else list(works)
    batch = [Work.from_payload(work) if isinstance(work, dict) else work for work in given]
    for work in batch:
        if not isinstance(work, Work):
            raise ValidationError("work", f"expected a Work or its payload (a dict), got {type(work).__name__}")
        check_site(work.site)
        check_webhook_key(work.notify, frozenset(webhooks()))
    ids: list[str] = []
    for work in batch:
        # Shown on the caller's Work; set without the attribute check (an id just made and
        # a status literal are valid, and the check cost a tenth of a deposit).
        if work.id is None:
            msgspec.Struct.__setattr__(work, "id", new_id())
        msgspec.Struct.__setattr__(work, "status", "queued")
        assert work.id is not None
        ids.append(work.id)
    now = time.time()
    waits = await _waits(gateway, batch, None if not_before is None or not_before <= now else not_before)
    # Buckets first, so a withdraw finds a work's bucket as soon as the work is in the log.
    await buckets.ensure_all(BucketKey(w.pipeline, w.site, w.priority) for w in batch)
    for start in range(0, len(batch), PUBLISH_CHUNK):
        chunk = zip(ids[start : start + PUBLISH_CHUNK], batch[start : start + PUBLISH_CHUNK],
                    waits[start : start + PUBLISH_CHUNK], strict=True)
        await asyncio.gather(*(_deposit_one(gateway, work_id, work, now, wait) for work_id, work, wait in chunk))
    return ids


async def _waits(gateway: LogGateway, batch: list[Work], not_before: float | None) -> list[ev.Waits | None]:
    """What each work waits for (None: nothing). Refuses (ValidationError) a precursor that
    is not a work id in the log or earlier in ``batch``, so no work waits for nothing."""
    earlier: dict[str, int] = {}
    wanted: set[str] = set()
    for index, work in enumerate(batch):
        for precursor in work.precursors or []:
            if not isinstance(precursor, str) or not _TOKEN.match(precursor):
                raise ValidationError("precursors", f"work {work.id}: a precursor is a work id, got {precursor!r}")
            if earlier.get(precursor, index) >= index:
                wanted.add(precursor)
        assert work.id is not None
        earlier.setdefault(work.id, index)
    names = sorted(wanted)
    heads = dict(zip(names, await asyncio.gather(*(gateway.head(name) for name in names)), strict=True))
    waits: list[ev.Waits | None] = []
    for work in batch:
        pending = []
        when = check_condition(work)
        for precursor in work.precursors or []:
            head = heads.get(precursor, _IN_BATCH)
            if head is None or precursor == work.id:
                raise ValidationError(
                    "precursors", f"work {work.id} waits for {precursor!r}, which is no work in the log "
                    "(a precursor deposited in the same call must come before the works that wait for it)"
                )
            if head is _IN_BATCH or precursor_outcome(head.event) != "succeeded" or when != "success":
                pending.append(precursor)  # (succeeded: counts at once, for the success rule)
        waits.append(ev.Waits(precursors=pending, not_before=not_before, when=when) if pending or not_before
                     else None)
    return waits


async def _deposit_one(gateway: LogGateway, work_id: str, work: Work, now: float, waits: ev.Waits | None) -> None:
    # The event id is the work id: a retried publish is dropped by the stream as a duplicate.
    event = ev.Deposited(id=work_id, **gateway.envelope(work_id, work.pipeline, now), work=work, waits=waits)
    try:
        await gateway.append_durably(event, 0, patience=30)
    except ConflictError:
        log.info("work %s already deposited; nothing to do", work_id)
