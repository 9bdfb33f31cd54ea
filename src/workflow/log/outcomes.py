"""Outcomes: what became of an attempt of a held work, recorded and then acknowledged.

Success is recorded, then the queue message acked. A failure with attempts left is
recorded with ``will_retry`` and the message ``nak``-ed with the backoff; without attempts
left, recorded as final and the message termed. The record comes first and is retried
through NATS outages (``append_durably``): a finished work's outcome is never dropped. If
the work was cancelled or handed on meanwhile, the CAS refuses the record and the message
is left alone: it may be another worker's now.

Acks, naks and terms are published without waiting for the server to confirm each: the
outcome is durably in the log before the message is acknowledged, so a lost ack only
makes the bucket deliver a stale message again, which the claim rule terms (its head is
the recorded outcome). Waiting would cost a round trip per work for nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from workflow.core import events as ev
from workflow.core.errors import ConflictError, ValidationError
from workflow.core.fold import evolve
from workflow.core.products import ArchivedFile
from workflow.core.retry import may_retry, retries_after, retry_delay
from workflow.core.work import Work
from workflow.log.claims import Lease, Leases
from workflow.log.gateway import Envelope, LogGateway

#: The fields of a work an outcome changes (what ``evolve`` sets for Succeeded and Failed).
OUTCOME_FIELDS = ("status", "attempt", "results", "products", "plots", "stop")


def mirror(state: Work, onto: Work) -> None:
    """Show the recorded outcome on the caller's Work object: the one place it is copied."""
    for name in OUTCOME_FIELDS:  # values of the fold's state: checked already, not again
        msgspec.Struct.__setattr__(onto, name, getattr(state, name))


class Outcomes:
    """Records the outcomes of the works this client holds."""

    def __init__(self, gateway: LogGateway, leases: Leases) -> None:
        self._log = gateway
        self._leases = leases

    async def succeed(
        self,
        work: Work,
        results: dict[str, Any] | None = None,
        products: list[str] | None = None,
        plots: list[str] | None = None,
        *,
        archived: list[ArchivedFile] | None = None,
        patience: float = 3600.0,
    ) -> None:
        """Record that a held work succeeded, then ack its queue message."""
        lease = self._leases.held(work)
        event = ev.Succeeded(
            **self._envelope(lease), attempt=lease.attempt, results=results, products=products, plots=plots,
            archived=archived,
        )
        await self._record(lease, event, patience)
        with contextlib.suppress(Exception):
            await lease.msg.ack()  # not awaited on the server: see the module docstring
        mirror(evolve(lease.running, event), work)

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
        archived: list[ArchivedFile] | None = None,
        patience: float = 3600.0,
    ) -> ev.Failed:
        """Record a failed attempt; retried later (``nak`` with backoff) if attempts remain
        and the reason is one that retries (:func:`~workflow.core.retry.retries_after`: the
        work's ``config["retry_on"]``); ``retry=False`` makes it final whatever the reason."""
        lease = self._leases.held(work)
        chain = lease.attempts_in_chain
        running = lease.running
        will_retry = retry and may_retry(chain, running.retries) and retries_after(reason, running.config)
        event = ev.Failed(
            **self._envelope(lease), attempt=lease.attempt, reason=reason, will_retry=will_retry,
            queue_seq=lease.queue_seq, error=error, traceback=traceback,
            retry_in=retry_delay(chain) if will_retry else None, results=results, products=products, plots=plots,
            archived=archived,
        )
        await self._record(lease, event, patience)
        with contextlib.suppress(Exception):
            if will_retry:
                await lease.msg.nak(delay=event.retry_in)
            else:
                await lease.msg.term()
        mirror(evolve(lease.running, event), work)
        return event

    async def release(self, work: Work, reason: str = "worker stopped at once") -> ev.Failed:
        """Give a held work back now (interrupted attempt; it is retried at once if it may)."""
        lease = self._leases.held(work)
        will_retry = may_retry(lease.attempts_in_chain, lease.running.retries)
        event = ev.Failed(
            **self._envelope(lease), attempt=lease.attempt, reason="interrupted", will_retry=will_retry,
            queue_seq=lease.queue_seq, error=reason, retry_in=0.0 if will_retry else None,
        )
        await self._record(lease, event, patience=10)
        with contextlib.suppress(Exception):
            await (lease.msg.nak() if will_retry else lease.msg.term())
        return event

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
            raise ValidationError(
                "status", f"update records an outcome: set 'success' or 'failure', not {work.status!r}"
            )

    def _envelope(self, lease: Lease) -> Envelope:
        return self._log.envelope(lease.work_id, lease.running.pipeline)

    async def _record(self, lease: Lease, event: ev.AnyEvent, patience: float) -> None:
        """Append the outcome against the lease's head, ending the lease once recorded or
        refused. Any other error (too large, NATS gone past ``patience``) keeps the lease,
        so the caller can still report something else or give the work back."""
        try:
            await self._log.append_durably(event, lease.head_seq, patience=patience)
        except ConflictError:
            # Cancelled or handed on: the message may be another worker's now, so it is
            # neither acked nor termed here; redelivery sorts out stale deliveries.
            self._leases.drop(lease)
            raise
        self._leases.drop(lease)
