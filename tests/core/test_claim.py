"""The claim decision, without a server: what a worker does with each kind of delivery."""

from __future__ import annotations

from dataclasses import dataclass, field

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from workflow import Work
from workflow.core import events as ev
from workflow.core.claim import (
    WATCH_LEASES,
    CheckClaimer,
    Defer,
    Delivery,
    FilteredStart,
    Head,
    NotClaimable,
    ReadQueued,
    RecordLost,
    Skip,
    Stale,
    Start,
    decide,
    decide_filtered,
    decide_on_head,
)
from workflow.core.errors import ValidationError
from workflow.core.filters import WithdrawFilter
from workflow.core.fold import evolve
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
    assert decide(first, None) == Start(expected_seq=QUEUE_SEQ, previous_attempt=3, recheck_on_conflict=True)


def test_a_first_start_that_is_refused_is_decided_again_on_the_head_and_its_attempt_follows_the_base():
    first = delivery(num_delivered=1, base_attempt=3, retries=2)
    decision = decide(first, None)
    assert isinstance(decision, Start) and decision.recheck_on_conflict and decision.attempt == 4
    # The CAS refused that start: the work's head now decides, and a start decided on it
    # is never rechecked again (one read of the head, no loop).
    by_filter = ev.Started(**COMMON, by="host:filter", attempt=4, queue_seq=QUEUE_SEQ, via="filter")
    assert decide_on_head(first, Head(11, by_filter)) == CheckClaimer(by_filter)  # a filter holds it
    assert isinstance(decide_on_head(first, Head(11, ev.Cancelled(**COMMON, reason="no"))), Stale)
    retry = decide_on_head(first, Head(12, failed(4, will_retry=True)))
    assert retry == Start(expected_seq=12, previous_attempt=4, recheck_on_conflict=False)
    # attempts count from the base: the 4th is the first of this chain, so retries remain
    lost = decide_on_head(first, Head(11, started(4)))
    assert isinstance(lost, RecordLost) and (lost.attempt, lost.will_retry) == (4, True)
    final = decide_on_head(first, Head(11, started(6)))  # the 3rd attempt of retries=2: none remain
    assert isinstance(final, RecordLost) and not final.will_retry


# -- redelivery ---------------------------------------------------------------------------


def test_a_redelivery_reads_the_head():
    assert delivery(num_delivered=2).needs_head


def test_a_redelivery_whose_head_is_the_queue_message_starts_against_it():
    decision = decide(delivery(base_attempt=1), Head(QUEUE_SEQ, requeued()))
    assert decision == Start(expected_seq=QUEUE_SEQ, previous_attempt=1, recheck_on_conflict=False)


def test_a_redelivery_after_a_failure_that_will_retry_starts_the_next_attempt_against_the_failure():
    decision = decide(delivery(), Head(12, failed(1, will_retry=True)))
    assert decision == Start(expected_seq=12, previous_attempt=1, recheck_on_conflict=False)
    assert isinstance(decision, Start) and decision.attempt == 2


def test_a_redelivery_whose_head_is_a_start_of_this_chain_records_the_lost_attempt_and_retries():
    decision = decide(delivery(retries=2), Head(11, started(1)))
    assert decision == RecordLost(
        expected_seq=11, attempt=1, lost_by="host:worker-1", will_retry=True, queue_seq=QUEUE_SEQ
    )
    assert isinstance(decision, RecordLost)
    assert decision.error == "worker host:worker-1 stopped heartbeating attempt 1 (lease expired)"
    assert decision.after(12) == Start(expected_seq=12, previous_attempt=1, recheck_on_conflict=False)


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


# -- withdraw filters: the rule --------------------------------------------------------------


def test_a_filter_takes_a_work_with_any_of_its_tags_or_events_and_exactly_its_user_and_parent():
    work = Work(pipeline="p", tags=["calib", "beam-2"], event=[7, 8], user="ann", config={"parent": "night-1"})
    assert WithdrawFilter.of(tags=["nope", "beam-2"]).matches(work)  # any of the tags, as the old $in
    assert WithdrawFilter.of(event=[1, 8]).matches(work)
    assert WithdrawFilter.of(tags="calib", event=7, user="ann", parent="night-1").matches(work)
    assert not WithdrawFilter.of(tags="calib", user="bob").matches(work)  # every filter given must hold
    assert not WithdrawFilter.of(parent="night-2").matches(work)
    assert not WithdrawFilter.of(tags="x").matches(Work(pipeline="p"))
    assert not WithdrawFilter() and WithdrawFilter.of(user="ann")


def test_a_filter_refuses_values_its_work_field_would_refuse():
    with pytest.raises(ValidationError) as refused:
        WithdrawFilter.of(event=["twelve"])
    assert refused.value.field == "event"
    with pytest.raises(ValidationError):
        WithdrawFilter.of(parent="")


# -- withdraw filters: claiming by filter ------------------------------------------------------

TAGGED = WithdrawFilter.of(tags="x")


def deposited(tags: list[str] | None = None, *, waits: bool = False) -> ev.Deposited:
    return ev.Deposited(
        **COMMON, work=Work(pipeline="p", id="W1", tags=tags, retries=2),
        waits=ev.Waits(precursors=["W0"]) if waits else None,
    )


def test_a_filtered_withdraw_claims_a_matching_work_at_the_head_of_its_queue_message():
    decision = decide_filtered(Head(QUEUE_SEQ, deposited(["x"])), TAGGED, now=5.0)
    assert isinstance(decision, FilteredStart)
    assert (decision.expected_seq, decision.queue_seq, decision.attempt) == (QUEUE_SEQ, QUEUE_SEQ, 1)


def test_a_filtered_withdraw_leaves_a_work_that_does_not_match_waits_or_runs():
    assert isinstance(decide_filtered(Head(QUEUE_SEQ, deposited(["y"])), TAGGED, now=5.0), NotClaimable)
    assert isinstance(decide_filtered(Head(QUEUE_SEQ, deposited(["x"], waits=True)), TAGGED, now=5.0), NotClaimable)
    assert isinstance(decide_filtered(Head(11, started(1)), TAGGED, now=5.0), NotClaimable)
    assert isinstance(decide_filtered(Head(11, ev.Cancelled(**COMMON)), TAGGED, now=5.0), NotClaimable)
    assert isinstance(decide_filtered(None, TAGGED, now=5.0), NotClaimable)


def test_a_filtered_retry_waits_for_its_backoff_then_joins_the_chain_of_its_queue_message():
    retry = ev.Failed(**COMMON, attempt=1, reason="error", will_retry=True, queue_seq=QUEUE_SEQ, retry_in=4.0)
    early = decide_filtered(Head(12, retry), TAGGED, now=4.0)
    assert isinstance(early, NotClaimable) and early.due_at == 5.0
    assert decide_filtered(Head(12, retry), TAGGED, now=5.0) == ReadQueued(QUEUE_SEQ)
    decision = decide_filtered(Head(12, retry), TAGGED, now=5.0, queued=Head(QUEUE_SEQ, deposited(["x"])))
    assert isinstance(decision, FilteredStart)
    assert (decision.expected_seq, decision.queue_seq, decision.attempt) == (12, QUEUE_SEQ, 2)


def filter_started(attempt: int = 1, time: float = 100.0) -> ev.Started:
    return ev.Started(**{**COMMON, "time": time}, by="w-f", attempt=attempt, queue_seq=QUEUE_SEQ, via="filter")


def watched(num_delivered: int = 2, timeout: float = 60.0, lease: float = 5.0) -> Delivery:
    return Delivery(num_delivered, QUEUE_SEQ, 0, 2, timeout, lease)


def test_the_bucket_asks_for_the_heartbeat_of_a_filter_claim_of_its_chain():
    head = Head(11, filter_started())
    assert decide(watched(), head) == CheckClaimer(head.event)


def test_a_live_filter_claim_is_left_for_its_remaining_timeout_plus_a_lease():
    decision = decide(watched(timeout=60, lease=5), Head(11, filter_started(time=100.0)), claimer_alive=True, now=130.0)
    assert isinstance(decision, Defer) and decision.delay == 30.0 + 5.0


def test_a_live_filter_claim_is_looked_at_again_within_ten_leases_however_long_its_timeout():
    decision = decide(watched(timeout=86_400, lease=5), Head(11, filter_started()), claimer_alive=True, now=100.0)
    assert isinstance(decision, Defer) and decision.delay == WATCH_LEASES * 5 + 5
    overdue = decide(watched(timeout=10, lease=5), Head(11, filter_started()), claimer_alive=True, now=500.0)
    assert isinstance(overdue, Defer) and overdue.delay == 5


def test_a_dead_filter_claim_is_recorded_lost_as_a_dead_bucket_worker_is():
    decision = decide(watched(), Head(11, filter_started()), claimer_alive=False, now=130.0)
    assert isinstance(decision, RecordLost) and decision.will_retry and decision.via == "filter"
    assert decision.error == "worker w-f stopped heartbeating its filtered claim of attempt 1"


def test_a_refused_first_start_meets_the_filter_claim_on_the_head_instead_of_discarding_the_message():
    first = watched(num_delivered=1)
    assert isinstance(decide(first, None), Start)
    claim = filter_started()
    assert decide_on_head(first, Head(11, claim)) == CheckClaimer(claim)
    assert isinstance(decide_on_head(first, Head(12, ev.Succeeded(**COMMON, attempt=1))), Stale)
    retry = failed(1, will_retry=True)
    expected = Start(expected_seq=12, previous_attempt=1, recheck_on_conflict=False)
    assert decide_on_head(first, Head(12, retry)) == expected


def test_a_started_event_written_before_filters_reads_as_claimed_by_a_bucket():
    old = b'{"type":"started","work_id":"W1","pipeline":"p","time":1.0,"attempt":1,"queue_seq":10,"v":1}'
    event = ev.decode(old)
    assert isinstance(event, ev.Started) and event.via == "bucket"


# -- withdraw filters: random interleavings (a model of the log, one bucket and the keys) --------
#
# Every decision below is the core's own (decide, decide_on_head, decide_filtered, may_retry,
# evolve); the model stands in only for the I/O: a log with per-work CAS, a bucket that
# redelivers after a lease or a nak's delay, heartbeat keys that expire, and a clock.

LEASE_S = 3.0


@dataclass
class Message:
    work_id: str
    seq: int
    available_at: float = 0.0
    holder: str | None = None
    held_until: float = 0.0
    num_delivered: int = 0
    done: bool = False


@dataclass
class Holding:
    via: str
    attempt: int
    head_seq: int
    queue_seq: int
    base_attempt: int
    retries: int
    timeout: float
    started_at: float


@dataclass
class Actor:
    name: str
    filters: WithdrawFilter | None  # None: an unfiltered bucket worker
    holds: dict[str, Holding] = field(default_factory=dict)


class Model:
    def __init__(self, works: list[tuple[bool, int]]) -> None:
        self.now = 0.0
        self.seq = 0
        self.log: dict[str, list[tuple[int, ev.AnyEvent]]] = {}
        self.states: dict[str, Work] = {}
        self.bucket: list[Message] = []
        self.keys: dict[str, tuple[str, int, float]] = {}  # work id -> (by, attempt, expires at)
        self.actors = [Actor("bucket-0", None), Actor("bucket-1", None), Actor("filter-0", TAGGED)]
        self.born = 0
        for i, (tagged, timeout) in enumerate(works):
            work = Work(pipeline="p", id=f"W{i}", tags=["x"] if tagged else None, retries=1, timeout=timeout)
            seq = self.append(ev.Deposited(work_id=work.id, pipeline="p", time=0.0, work=work), 0)
            assert seq is not None
            self.bucket.append(Message(work.id, seq))

    # -- the log, with the CAS and the fold's state machine ------------------------------------

    def head(self, work_id: str) -> Head | None:
        events = self.log.get(work_id)
        return Head(*events[-1]) if events else None

    def append(self, event: ev.AnyEvent, expected_seq: int) -> int | None:
        head = self.head(event.work_id)
        if (head.seq if head else 0) != expected_seq:
            return None
        self.states[event.work_id] = evolve(self.states.get(event.work_id), event)  # FoldError fails the test
        self.seq += 1
        self.log.setdefault(event.work_id, []).append((self.seq, event))
        return self.seq

    def event_at(self, seq: int) -> Head | None:
        for events in self.log.values():
            for at, event in events:
                if at == seq:
                    return Head(at, event)
        return None

    def alive(self, work_id: str, by: str | None, attempt: int) -> bool:
        key = self.keys.get(work_id)
        return key is not None and key[2] > self.now and key[:2] == (by, attempt)

    def envelope(self, work_id: str, actor: Actor) -> dict[str, object]:
        return {"work_id": work_id, "pipeline": "p", "time": self.now, "by": actor.name}

    # -- a bucket worker ------------------------------------------------------------------------

    def bucket_claim(self, actor: Actor) -> None:
        ready = [m for m in self.bucket if not m.done and m.available_at <= self.now
                 and (m.holder is None or m.held_until <= self.now)]
        if not ready:
            return
        msg = ready[0]
        msg.num_delivered += 1
        msg.holder, msg.held_until = actor.name, self.now + LEASE_S
        queued = self.event_at(msg.seq)
        assert queued is not None and isinstance(queued.event, ev.Deposited | ev.Requeued)
        work = queued.event.work
        delivery = Delivery(msg.num_delivered, msg.seq, work.attempt, work.retries, work.timeout, LEASE_S)
        head = self.head(msg.work_id) if delivery.needs_head else None
        decision = self.settle(actor, msg, delivery, head, decide(delivery, head))
        if isinstance(decision, Start):
            if self.start(actor, msg, work, decision) or not decision.recheck_on_conflict:
                return
            head = self.head(msg.work_id)
            decision = self.settle(actor, msg, delivery, head, decide_on_head(delivery, head))
            if isinstance(decision, Start):
                self.start(actor, msg, work, decision)
                return
        if isinstance(decision, Stale):
            msg.done = True
        elif isinstance(decision, Defer):
            msg.holder, msg.available_at = None, self.now + decision.delay

    def settle(self, actor: Actor, msg: Message, delivery: Delivery, head: Head | None, decision):
        if isinstance(decision, CheckClaimer):
            alive = self.alive(msg.work_id, decision.started.by, decision.started.attempt)
            decision = decide_on_head(delivery, head, claimer_alive=alive, now=self.now)
        if isinstance(decision, RecordLost):
            if decision.via == "filter":  # a live filtered claim is never taken away
                assert not self.alive(msg.work_id, decision.lost_by, decision.attempt)
            lost = ev.Failed(**self.envelope(msg.work_id, actor), attempt=decision.attempt, reason="lost",
                             will_retry=decision.will_retry, queue_seq=decision.queue_seq, error=decision.error)
            seq = self.append(lost, decision.expected_seq)
            return Skip("changed") if seq is None else decision.after(seq)
        return decision

    def start(self, actor: Actor, msg: Message, work: Work, start: Start) -> bool:
        started = ev.Started(**self.envelope(msg.work_id, actor), attempt=start.attempt, queue_seq=msg.seq)
        seq = self.append(started, start.expected_seq)
        if seq is not None:
            actor.holds[msg.work_id] = Holding(
                "bucket", start.attempt, seq, msg.seq, work.attempt, work.retries, work.timeout, self.now)
        return seq is not None

    # -- a filtered worker ----------------------------------------------------------------------

    def filter_claim(self, actor: Actor) -> None:
        assert actor.filters is not None
        for work_id, state in sorted(self.states.items()):
            if state.status != "queued" or not actor.filters.matches(state) or work_id in actor.holds:
                continue
            head = self.head(work_id)
            decision = decide_filtered(head, actor.filters, self.now)
            if isinstance(decision, ReadQueued):
                decision = decide_filtered(head, actor.filters, self.now, self.event_at(decision.queue_seq))
            if not isinstance(decision, FilteredStart):
                continue
            self.keys[work_id] = (actor.name, decision.attempt, self.now + LEASE_S)  # alive before the claim
            started = ev.Started(**self.envelope(work_id, actor), attempt=decision.attempt,
                                 queue_seq=decision.queue_seq, via="filter")
            seq = self.append(started, decision.expected_seq)
            if seq is None:
                continue
            work = decision.queued.work
            actor.holds[work_id] = Holding(
                "filter", decision.attempt, seq, decision.queue_seq, work.attempt, work.retries, work.timeout, self.now)
            return

    # -- what every worker does with what it holds -------------------------------------------------

    def heartbeat(self, actor: Actor) -> None:
        for work_id, held in list(actor.holds.items()):
            head = self.head(work_id)
            if head is None or head.seq != held.head_seq:  # cancelled or handed on: not ours
                del actor.holds[work_id]
            elif held.via == "bucket":
                msg = self.message(held.queue_seq)
                if msg.holder == actor.name:
                    msg.held_until = self.now + LEASE_S
            else:
                self.keys[work_id] = (actor.name, held.attempt, self.now + LEASE_S)

    def finish(self, actor: Actor, succeed: bool) -> None:
        if not actor.holds:
            return
        work_id, held = sorted(actor.holds.items())[0]
        del actor.holds[work_id]
        envelope = self.envelope(work_id, actor)
        timed_out = self.now - held.started_at > held.timeout
        will_retry = not succeed and not timed_out and may_retry(held.attempt - held.base_attempt, held.retries)
        outcome: ev.AnyEvent
        if succeed and not timed_out:
            outcome = ev.Succeeded(**envelope, attempt=held.attempt)
        else:
            outcome = ev.Failed(**envelope, attempt=held.attempt, reason="timeout" if timed_out else "error",
                                will_retry=will_retry, queue_seq=held.queue_seq, retry_in=1.0 if will_retry else None)
        if self.append(outcome, held.head_seq) is None:
            return  # refused: a zombie's outcome changes nothing, and its message is not touched
        if held.via == "filter":
            self.keys.pop(work_id, None)
            return
        msg = self.message(held.queue_seq)
        if will_retry:
            msg.holder, msg.available_at = None, self.now + 1.0
        else:
            msg.done = True

    def cancel(self, index: int) -> None:
        work_id = sorted(self.log)[index % len(self.log)]
        head = self.head(work_id)
        assert head is not None
        if self.states[work_id].finished:
            return
        if self.append(ev.Cancelled(work_id=work_id, pipeline="p", time=self.now), head.seq) is None:
            return
        for actor in self.actors:  # the cancel reaches its holder as an event
            held = actor.holds.pop(work_id, None)
            if held is not None and held.via == "bucket":
                self.message(held.queue_seq).done = True
            elif held is not None:
                self.keys.pop(work_id, None)

    def kill(self, index: int) -> None:
        """SIGKILL: the worker vanishes with what it holds; a new one takes its place."""
        dead = self.actors[index % len(self.actors)]
        self.born += 1
        self.actors[self.actors.index(dead)] = Actor(f"{dead.name.split('-')[0]}-new{self.born}", dead.filters)

    def message(self, seq: int) -> Message:
        return next(m for m in self.bucket if m.seq == seq)

    def step(self, action: tuple[str, int]) -> None:
        kind, n = action
        actor = self.actors[n % len(self.actors)]
        if kind == "claim":
            (self.bucket_claim if actor.filters is None else self.filter_claim)(actor)
        elif kind == "beat":
            self.heartbeat(actor)
        elif kind in ("succeed", "fail"):
            self.finish(actor, kind == "succeed")
        elif kind == "cancel":
            self.cancel(n)
        elif kind == "kill":
            self.kill(n)
        else:
            self.now += n / 2

    def drain(self, rounds: int = 400) -> None:
        """Live workers, beating and succeeding, until every work is final (or the bound)."""
        for _ in range(rounds):
            if all(state.finished for state in self.states.values()):
                return
            for actor in self.actors:
                self.heartbeat(actor)
                while actor.holds:
                    self.finish(actor, succeed=True)
                (self.bucket_claim if actor.filters is None else self.filter_claim)(actor)
            self.now += 1.0


ACTIONS = st.tuples(st.sampled_from(["claim", "claim", "beat", "succeed", "fail", "cancel", "kill", "tick"]),
                    st.integers(0, 11))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(works=st.lists(st.tuples(st.booleans(), st.integers(2, 20)), min_size=1, max_size=6),
       actions=st.lists(ACTIONS, max_size=80))
def test_filtered_and_unfiltered_claims_kills_and_cancels_finish_every_work_exactly_once(works, actions):
    # Given works, some tagged, and two bucket workers and one filtered worker on their pipeline
    model = Model(works)
    # When they claim, beat, succeed, fail, are cancelled and killed in any order, then live on
    for action in actions:
        model.step(action)
    model.drain()
    # Then every work ended exactly once, with its end last, and none is stranded
    for work_id, events in model.log.items():
        finals = [event for _, event in events if ev.is_final(event)]
        assert len(finals) == 1, (work_id, [type(e).__name__ for _, e in events])
        assert finals[0] is events[-1][1]
        assert sum(isinstance(e, ev.Succeeded) for _, e in events) <= 1
        # And the filtered worker started only works its filter takes
        for _, event in events:
            if isinstance(event, ev.Started) and event.via == "filter":
                assert TAGGED.matches(model.states[work_id])
