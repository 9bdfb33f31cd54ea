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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from workflow.core.events import AnyEvent, Failed, Started
from workflow.core.retry import may_retry


@dataclass(frozen=True)
class Delivery:
    """One delivery of a queue message, as the bucket handed it over."""

    num_delivered: int  # 1 for the first delivery; more after a nak or a lost worker
    queue_seq: int      # the queue message's stream sequence: names its chain of attempts
    base_attempt: int   # the queued snapshot's attempt: attempts made before this chain
    retries: int        # the queued snapshot's retries: bounds the attempts of this chain

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
    stale_on_conflict: bool  # a refused first start means the message is stale: term it

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

    @property
    def error(self) -> str:
        """What the ``Failed`` event says happened, for the operator reading the history."""
        return f"worker {self.lost_by} stopped heartbeating attempt {self.attempt} (lease expired)"

    def after(self, failed_seq: int) -> Start | Stale:
        """Once the loss is recorded at ``failed_seq``: the next attempt if one is left,
        else the work has failed for good and its message is done."""
        if self.will_retry:
            return Start(expected_seq=failed_seq, previous_attempt=self.attempt, stale_on_conflict=False)
        return Stale(f"attempt {self.attempt} was the last and it was lost: the work failed for good")


Decision = Start | RecordLost | Stale | Skip


def decide(delivery: Delivery, head: Head | None) -> Decision:
    """What to do with ``delivery``, given its work's ``head`` (read only if
    ``delivery.needs_head``; ignored for a first delivery)."""
    base = delivery.base_attempt
    if not delivery.needs_head:
        return Start(expected_seq=delivery.queue_seq, previous_attempt=base, stale_on_conflict=True)
    if head is None:  # cannot happen in an immutable log; never start blindly
        return Skip("the work has no event in the log")
    event = head.event
    if head.seq == delivery.queue_seq:
        return Start(expected_seq=head.seq, previous_attempt=base, stale_on_conflict=False)
    if isinstance(event, Started) and event.queue_seq == delivery.queue_seq:
        return RecordLost(
            expected_seq=head.seq,
            attempt=event.attempt,
            lost_by=event.by,
            will_retry=may_retry(event.attempt - base, delivery.retries),
            queue_seq=delivery.queue_seq,
        )
    if isinstance(event, Failed) and event.will_retry and event.queue_seq == delivery.queue_seq:
        return Start(expected_seq=head.seq, previous_attempt=event.attempt, stale_on_conflict=False)
    return Stale(f"the work moved on ({type(event).__name__}): cancelled, finished, or re-queued")
