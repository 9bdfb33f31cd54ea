"""The claim decision: what a worker does with a queue message a bucket delivered to it.

A queue message (``Deposited`` or ``Requeued``) may be delivered more than once: after a
``nak`` (a retry), after a worker died (its lease ran out), or long after the work it
queued was cancelled, finished or re-queued. Whether to start it, and against which
event, follows from two facts only: what the delivery is, and the work's head (its last
event in the log). :func:`decide` is that rule as a pure function, so every branch is
tested without a server; the log layer does only the I/O the decision asks for.

The rule (DESIGN.md, "The subtle steps"):

- a first delivery starts against the queue message itself;
- a redelivery starts only if the head belongs to this delivery's chain: the queue message,
  a ``Failed(will_retry)`` naming it, or a ``Started`` naming it, which means that attempt
  was lost (its worker stopped heartbeating) and is recorded as lost first;
- any other head (finished, cancelled, re-queued by a newer message) makes it stale.

Filtered withdraws (``workflow run --tag T``; DESIGN.md, "Withdraw filters") claim a work
without its queue message: :func:`decide_filtered` starts it against its head (a queue
event, or a ``Failed(will_retry)`` whose backoff has passed) with ``Started(via="filter")``
naming the queue message, and the claimer keeps a heartbeat key alive instead of the
message. The bucket stays the one lease authority, as watchdog: a delivery whose head is
a filter claim of its chain asks for that heartbeat (:class:`CheckClaimer`); a live one
sends the message away for the claim's remaining timeout plus a lease (:class:`Defer`,
at most :data:`WATCH_LEASES` leases, so a dead claimer is noticed in bounded time), a
dead one is recorded lost and the work runs again, exactly as for a dead bucket worker.
A first delivery refused by the CAS is decided again on the head (:func:`decide_on_head`)
rather than discarded, since the work may be held by a filter claim that needs a watchdog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from workflow.core.events import AnyEvent, Deposited, Failed, Requeued, Started
from workflow.core.filters import WithdrawFilter
from workflow.core.retry import may_retry

#: A watched filter claim is looked at again at least every this many leases, whatever
#: its work's timeout: a dead filtered claimer is noticed within that (plus a lease).
WATCH_LEASES = 10


@dataclass(frozen=True)
class Delivery:
    """One delivery of a queue message, as the bucket handed it over."""

    num_delivered: int  # 1 for the first delivery; more after a nak or a lost worker
    queue_seq: int      # the queue message's stream sequence: names its chain of attempts
    base_attempt: int   # the queued snapshot's attempt: attempts made before this chain
    retries: int        # the queued snapshot's retries: bounds the attempts of this chain
    timeout: float = 3600.0  # the queued snapshot's timeout: how long one attempt may run
    lease: float = 30.0      # the bucket's AckWait

    @property
    def needs_head(self) -> bool:
        """Only a redelivery asks the log: a first delivery is its work's newest queue event
        unless something happened since, which the start's CAS catches anyway."""
        return self.num_delivered > 1


class Head(NamedTuple):
    """A work's last event and its stream sequence."""

    seq: int
    event: AnyEvent


@dataclass(frozen=True)
class Start:
    """Publish ``Started(attempt)`` with the CAS against ``expected_seq``."""

    expected_seq: int
    previous_attempt: int
    recheck_on_conflict: bool  # a refused first start: decide again on the head (decide_on_head)

    @property
    def attempt(self) -> int:
        return self.previous_attempt + 1


@dataclass(frozen=True)
class Stale:
    """The message will never start its work: ``term`` it so it is not delivered again."""

    why: str


@dataclass(frozen=True)
class Skip:
    """Leave the message alone (no start, no term): the log cannot justify either."""

    why: str


@dataclass(frozen=True)
class RecordLost:
    """The head is a ``Started`` of this chain: its worker vanished. Publish
    ``Failed(reason="lost", attempt, will_retry)`` with the CAS against ``expected_seq``,
    then do what :meth:`after` says."""

    expected_seq: int
    attempt: int
    lost_by: str | None
    will_retry: bool
    queue_seq: int
    via: str = "bucket"

    @property
    def error(self) -> str:
        """What the ``Failed`` event says happened, for the operator reading the history."""
        if self.via == "filter":
            return f"worker {self.lost_by} stopped heartbeating its filtered claim of attempt {self.attempt}"
        return f"worker {self.lost_by} stopped heartbeating attempt {self.attempt} (lease expired)"

    def failed(self, work_id: str, pipeline: str, *, by: str | None, now: float) -> Failed:
        """The ``Failed(reason="lost")`` that records the loss: one wording, whoever
        notices it (a bucket worker meeting the message, or the claim sweeper)."""
        return Failed(
            work_id=work_id, pipeline=pipeline, time=now, by=by, attempt=self.attempt, reason="lost",
            will_retry=self.will_retry, queue_seq=self.queue_seq, error=self.error,
        )

    def after(self, failed_seq: int) -> Start | Stale:
        """Once the loss is recorded at ``failed_seq``: the next attempt if one is left,
        else the work has failed for good and its message is done."""
        if self.will_retry:
            return Start(expected_seq=failed_seq, previous_attempt=self.attempt, recheck_on_conflict=False)
        return Stale(f"attempt {self.attempt} was the last and it was lost: the work failed for good")


@dataclass(frozen=True)
class CheckClaimer:
    """The head is a filter claim of this chain (``started``): read its claimer's heartbeat,
    then decide again with ``claimer_alive``."""

    started: Started


@dataclass(frozen=True)
class Defer:
    """Leave the work to its live filtered claimer: ``nak`` the message with ``delay``
    seconds, so the bucket looks at the claim again then (no attempt is used)."""

    delay: float
    why: str


Decision = Start | RecordLost | Stale | Skip | CheckClaimer | Defer


def decide(
    delivery: Delivery, head: Head | None, *, claimer_alive: bool | None = None, now: float = 0.0
) -> Decision:
    """What to do with ``delivery``, given its work's ``head`` (read only if
    ``delivery.needs_head``; ignored for a first delivery). ``claimer_alive`` and ``now``
    (unix seconds) matter only once a :class:`CheckClaimer` asked for them."""
    if not delivery.needs_head:
        return Start(expected_seq=delivery.queue_seq, previous_attempt=delivery.base_attempt, recheck_on_conflict=True)
    return decide_on_head(delivery, head, claimer_alive=claimer_alive, now=now)


def decide_on_head(
    delivery: Delivery, head: Head | None, *, claimer_alive: bool | None = None, now: float = 0.0
) -> Decision:
    """What to do with ``delivery`` given its work's ``head``: a redelivery, or a first
    delivery whose start the CAS refused."""
    base = delivery.base_attempt
    if head is None:  # cannot happen in an immutable log; never start blindly
        return Skip("the work has no event in the log")
    event = head.event
    if head.seq == delivery.queue_seq:
        return Start(expected_seq=head.seq, previous_attempt=base, recheck_on_conflict=False)
    if isinstance(event, Started) and event.queue_seq == delivery.queue_seq:
        if event.via == "filter" and claimer_alive is not False:
            if claimer_alive is None:
                return CheckClaimer(event)
            return Defer(watch_delay(event, delivery, now), f"worker {event.by} holds it by filter, alive")
        return RecordLost(
            expected_seq=head.seq,
            attempt=event.attempt,
            lost_by=event.by,
            will_retry=may_retry(event.attempt - base, delivery.retries),
            queue_seq=delivery.queue_seq,
            via=event.via,
        )
    if isinstance(event, Failed) and event.will_retry and event.queue_seq == delivery.queue_seq:
        return Start(expected_seq=head.seq, previous_attempt=event.attempt, recheck_on_conflict=False)
    return Stale(f"the work moved on ({type(event).__name__}): cancelled, finished, or re-queued")


def watch_delay(started: Started, delivery: Delivery, now: float) -> float:
    """How long the bucket leaves a live filter claim alone: what is left of the attempt's
    timeout (at most :data:`WATCH_LEASES` leases), plus one lease for its outcome to land.
    A claimer's clock may differ from ours: that changes only when we look again."""
    remaining = started.time + delivery.timeout - now
    return min(max(remaining, 0.0), WATCH_LEASES * delivery.lease) + delivery.lease


# -- filtered withdraws -----------------------------------------------------------------

Queued = Deposited | Requeued


@dataclass(frozen=True)
class FilteredStart:
    """Claim the work by filter: ``Started(via="filter", queue_seq=queue_seq)`` with the CAS
    against ``expected_seq``. ``queued`` is the queue event whose chain the attempt joins
    (its snapshot is the work that runs; its attempt and retries bound the chain)."""

    expected_seq: int
    previous_attempt: int
    queue_seq: int
    queued: Queued

    @property
    def attempt(self) -> int:
        return self.previous_attempt + 1


@dataclass(frozen=True)
class ReadQueued:
    """The head is a retry of the chain of queue message ``queue_seq``: read that event,
    then decide again with it."""

    queue_seq: int


@dataclass(frozen=True)
class NotClaimable:
    """The work is not for this filtered withdraw now. ``due_at`` (unix seconds): when a
    retry's backoff ends, if that is the only reason."""

    why: str
    due_at: float | None = None


FilteredDecision = FilteredStart | ReadQueued | NotClaimable


def decide_filtered(
    head: Head | None, filters: WithdrawFilter, now: float, queued: Head | None = None
) -> FilteredDecision:
    """Whether a filtered withdraw may claim the work whose current ``head`` this is.

    Only a work waiting in its bucket is claimable: its head is its queue event (deposited
    or re-queued, not waiting), or a ``Failed(will_retry)`` of a chain whose backoff has
    passed at ``now``. The work must match ``filters`` as the queue event has it (the read
    model that found it may lag). Running, finished, cancelled and waiting works are not:
    a running one's liveness is the bucket's to judge.
    """
    if head is None:
        return NotClaimable("the work has no event in the log")
    event = head.event
    if isinstance(event, Deposited | Requeued):
        if isinstance(event, Deposited) and event.waits is not None:
            return NotClaimable("the work waits for its precursors or its time")
        return _claim_if_matching(head.seq, event.work.attempt, Head(head.seq, event), filters)
    if isinstance(event, Failed) and event.will_retry and event.queue_seq is not None:
        due_at = event.time + (event.retry_in or 0.0)
        if due_at > now:
            return NotClaimable(f"attempt {event.attempt} failed; its retry is due later", due_at=due_at)
        if queued is None or queued.seq != event.queue_seq:
            return ReadQueued(event.queue_seq)
        return _claim_if_matching(head.seq, event.attempt, queued, filters)
    return NotClaimable(f"the work is not queued ({type(event).__name__})")


def _claim_if_matching(
    expected_seq: int, previous_attempt: int, queued: Head, filters: WithdrawFilter
) -> FilteredDecision:
    event = queued.event
    if not isinstance(event, Deposited | Requeued):
        return NotClaimable(f"sequence {queued.seq} is not a queue event ({type(event).__name__})")
    if not filters.matches(event.work):
        return NotClaimable(f"the work does not match {filters.describe()}")
    return FilteredStart(expected_seq, previous_attempt, queued.seq, event)
