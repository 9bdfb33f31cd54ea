"""The claim decision, without a server: what a worker does with each kind of delivery."""

from __future__ import annotations

from workflow import Work
from workflow.core import events as ev
from workflow.core.claim import Delivery, Head, RecordLost, Skip, Stale, Start, decide
from workflow.core.retry import may_retry, retry_delay

QUEUE_SEQ = 10
COMMON = {"work_id": "W1", "pipeline": "p", "time": 1.0}


def delivery(num_delivered: int = 2, base_attempt: int = 0, retries: int = 2) -> Delivery:
    return Delivery(num_delivered=num_delivered, queue_seq=QUEUE_SEQ, base_attempt=base_attempt, retries=retries)


def started(attempt: int, queue_seq: int = QUEUE_SEQ) -> ev.Started:
    return ev.Started(**COMMON, by="host:worker-1", attempt=attempt, queue_seq=queue_seq)


def failed(attempt: int, *, will_retry: bool, queue_seq: int = QUEUE_SEQ) -> ev.Failed:
    return ev.Failed(**COMMON, attempt=attempt, reason="error", will_retry=will_retry, queue_seq=queue_seq)


def requeued() -> ev.Requeued:
    return ev.Requeued(**COMMON, work=Work(pipeline="p", id="W1"))


# -- first delivery -----------------------------------------------------------------------


def test_a_first_delivery_starts_against_its_own_queue_message_without_reading_the_head():
    first = delivery(num_delivered=1, base_attempt=3)
    assert not first.needs_head
    assert decide(first, None) == Start(expected_seq=QUEUE_SEQ, previous_attempt=3, stale_on_conflict=True)


def test_a_first_start_that_is_refused_makes_the_message_stale_and_its_attempt_follows_the_base():
    decision = decide(delivery(num_delivered=1, base_attempt=3), None)
    assert isinstance(decision, Start)
    assert decision.stale_on_conflict
    assert decision.attempt == 4


# -- redelivery ---------------------------------------------------------------------------


def test_a_redelivery_reads_the_head():
    assert delivery(num_delivered=2).needs_head


def test_a_redelivery_whose_head_is_the_queue_message_starts_against_it():
    decision = decide(delivery(base_attempt=1), Head(QUEUE_SEQ, requeued()))
    assert decision == Start(expected_seq=QUEUE_SEQ, previous_attempt=1, stale_on_conflict=False)


def test_a_redelivery_after_a_failure_that_will_retry_starts_the_next_attempt_against_the_failure():
    decision = decide(delivery(), Head(12, failed(1, will_retry=True)))
    assert decision == Start(expected_seq=12, previous_attempt=1, stale_on_conflict=False)
    assert isinstance(decision, Start) and decision.attempt == 2


def test_a_redelivery_whose_head_is_a_start_of_this_chain_records_the_lost_attempt_and_retries():
    decision = decide(delivery(retries=2), Head(11, started(1)))
    assert decision == RecordLost(
        expected_seq=11, attempt=1, lost_by="host:worker-1", will_retry=True, queue_seq=QUEUE_SEQ
    )
    assert isinstance(decision, RecordLost)
    assert decision.error == "worker host:worker-1 stopped heartbeating attempt 1 (lease expired)"
    assert decision.after(12) == Start(expected_seq=12, previous_attempt=1, stale_on_conflict=False)


def test_a_lost_last_attempt_is_recorded_as_final_and_the_message_is_then_stale():
    decision = decide(delivery(retries=2), Head(15, started(3)))
    assert isinstance(decision, RecordLost)
    assert decision.attempt == 3 and not decision.will_retry
    assert isinstance(decision.after(16), Stale)


def test_attempts_are_counted_from_the_queued_snapshot_so_a_work_retried_by_hand_gets_its_retries_again():
    decision = decide(delivery(base_attempt=3, retries=2), Head(20, started(4)))
    assert isinstance(decision, RecordLost) and decision.will_retry


def test_a_redelivery_whose_work_has_no_event_is_skipped_never_started_blindly():
    assert isinstance(decide(delivery(), None), Skip)


def test_a_redelivery_of_a_succeeded_work_is_stale():
    head = Head(13, ev.Succeeded(**COMMON, attempt=1))
    assert isinstance(decide(delivery(), head), Stale)


def test_a_redelivery_of_a_work_that_failed_for_good_is_stale():
    assert isinstance(decide(delivery(), Head(13, failed(3, will_retry=False))), Stale)


def test_a_redelivery_of_a_cancelled_work_is_stale():
    assert isinstance(decide(delivery(), Head(13, ev.Cancelled(**COMMON))), Stale)


def test_a_redelivery_of_a_work_requeued_by_a_newer_message_is_stale():
    assert isinstance(decide(delivery(), Head(QUEUE_SEQ + 5, requeued())), Stale)


def test_a_start_or_failure_of_another_chain_makes_the_redelivery_stale():
    assert isinstance(decide(delivery(), Head(30, started(1, queue_seq=25))), Stale)
    assert isinstance(decide(delivery(), Head(30, failed(1, will_retry=True, queue_seq=25))), Stale)


# -- the retry rule -----------------------------------------------------------------------


def test_a_chain_holds_at_most_retries_plus_one_attempts():
    assert [may_retry(attempts, retries=2) for attempts in (1, 2, 3)] == [True, True, False]
    assert not may_retry(1, retries=0)


def test_the_backoff_doubles_from_its_base_and_is_capped():
    assert [retry_delay(n, base=5.0) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert retry_delay(0, base=5.0) == 5.0
    assert retry_delay(30, base=5.0) == 300.0
