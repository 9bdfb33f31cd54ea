"""Deposit: put works in their buckets, each with its first event.

The first event is appended against sequence 0 over the work's own subjects: "no event
exists for this work yet". So re-depositing an existing id can never create a second
work, whatever the ``Nats-Msg-Id`` duplicate window, and a retried deposit is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from workflow.core import events as ev
from workflow.core.errors import ConflictError, ValidationError
from workflow.core.ids import new_id
from workflow.core.subjects import BucketKey
from workflow.core.work import Work
from workflow.log.buckets import Buckets
from workflow.log.gateway import LogGateway

log = logging.getLogger("workflow.client")

#: Deposits published at once: enough to fill the pipe, few enough not to flood it.
PUBLISH_CHUNK = 512


async def deposit(gateway: LogGateway, buckets: Buckets, works: Work | Iterable[Work]) -> list[str]:
    """Put works in their buckets; returns their ids (made here if not set).

    Depositing a work whose id already exists is a no-op: the first event of a work is
    appended only if the work has no event yet, so a retried deposit never duplicates.
    """
    batch = [works] if isinstance(works, Work) else list(works)
    ids: list[str] = []
    for work in batch:
        if not isinstance(work, Work):
            raise ValidationError("work", f"expected a Work, got {type(work).__name__}")
        if work.id is None:
            work.id = new_id()
        work.status = "queued"
        ids.append(work.id)
    # Buckets first, so a withdraw finds a work's bucket as soon as the work is in the log.
    await buckets.ensure_all(BucketKey(w.pipeline, w.site, w.priority) for w in batch)
    now = time.time()
    for start in range(0, len(batch), PUBLISH_CHUNK):
        chunk = zip(ids[start : start + PUBLISH_CHUNK], batch[start : start + PUBLISH_CHUNK], strict=True)
        await asyncio.gather(*(_deposit_one(gateway, work_id, work, now) for work_id, work in chunk))
    return ids


async def _deposit_one(gateway: LogGateway, work_id: str, work: Work, now: float) -> None:
    # The event id is the work id: a retried publish is dropped by the stream as a duplicate.
    event = ev.Deposited(id=work_id, **gateway.envelope(work_id, work.pipeline, now), work=work)
    try:
        await gateway.append_durably(event, 0, patience=30)
    except ConflictError:
        log.info("work %s already deposited; nothing to do", work_id)
