"""A property of the resolver's rules (core.waits), without NATS: any DAG of works, run in
any order a worker pool might choose, with any works failing, ends with every work
finished exactly once, each started only after its precursors succeeded, and a failure
(or a cancel) propagating as a cancellation naming the precursor. The real resolver runs
the same ``Registry`` (tests/log/test_waiting.py runs a tree of 200 works through NATS)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workflow.core import events as ev
from workflow.core.fold import fold
from workflow.core.waits import Cancel, Registry, Release
from workflow.core.work import Work


@st.composite
def dags(draw):
    """``n`` works; work j may wait for any earlier works (so no cycle); some fail when run."""
    n = draw(st.integers(1, 14))
    precursors = [sorted(draw(st.sets(st.integers(0, j - 1), max_size=3))) if j else [] for j in range(n)]
    failing = draw(st.sets(st.integers(0, n - 1), max_size=n))
    return n, precursors, failing


class Simulation:
    """The log (every event, in order), the resolver's registry, and the queued works."""

    def __init__(self, n: int, precursors: list[list[int]]) -> None:
        self.ids = [f"w{i:02d}" for i in range(n)]
        self.precursors = {self.ids[j]: [self.ids[i] for i in ps] for j, ps in enumerate(precursors)}
        self.log: list[tuple[int, ev.AnyEvent]] = []
        self.registry = Registry()
        self.queued: list[str] = []
        self.clock = 0.0

    def append(self, event: ev.AnyEvent) -> None:
        self.clock += 1
        self.log.append((len(self.log) + 1, event))
        if isinstance(event, (ev.Requeued,)) or (isinstance(event, ev.Deposited) and event.waits is None):
            self.queued.append(event.work_id)
        for action in self.registry.observe(len(self.log), event.work_id, event, self.clock):
            self.act(action)

    def act(self, action: Release | Cancel) -> None:
        waiting = action.waiting
        assert self.head_seq(waiting.work_id) == waiting.seq  # the CAS the resolver writes against
        if isinstance(action, Release):
            self.append(ev.Requeued(work_id=waiting.work_id, pipeline="p", time=self.clock, work=waiting.work,
                                    reason=action.reason))
        else:
            self.append(ev.Cancelled(work_id=waiting.work_id, pipeline="p", time=self.clock, reason=action.reason))

    def head_seq(self, work_id: str) -> int:
        return max(seq for seq, event in self.log if event.work_id == work_id)

    def deposit_all(self) -> None:
        """One deposit call: every precursor comes earlier in it, so none has succeeded yet."""
        for work_id in self.ids:
            pending = self.precursors[work_id]
            work = Work(pipeline="p", id=work_id, precursors=pending or None, status="queued")
            waits = ev.Waits(precursors=pending) if pending else None
            self.append(ev.Deposited(work_id=work_id, pipeline="p", time=self.clock, work=work, waits=waits))
        for action in self.registry.go_live(self.clock):  # heads read: nothing has succeeded yet
            self.act(action)

    def run(self, work_id: str, fails: bool) -> None:
        self.queued.remove(work_id)
        self.append(ev.Started(work_id=work_id, pipeline="p", time=self.clock, attempt=1, queue_seq=1))
        if fails:
            self.append(ev.Failed(work_id=work_id, pipeline="p", time=self.clock, attempt=1, reason="error",
                                  will_retry=False))
        else:
            self.append(ev.Succeeded(work_id=work_id, pipeline="p", time=self.clock, attempt=1))

    def events_of(self, work_id: str) -> list[tuple[int, ev.AnyEvent]]:
        return [(seq, event) for seq, event in self.log if event.work_id == work_id]


@settings(max_examples=300, deadline=None)
@given(dags(), st.data())
def test_a_random_dag_finishes_in_dependency_order_each_work_once_failures_cancelling_the_rest(dag, data):
    n, precursors, failing = dag
    sim = Simulation(n, precursors)
    sim.deposit_all()
    while sim.queued:  # a worker pool takes the queued works in any order
        work_id = data.draw(st.sampled_from(sorted(sim.queued)))
        sim.run(work_id, fails=sim.ids.index(work_id) in failing)

    final = {}
    for work_id in sim.ids:
        events = sim.events_of(work_id)
        state = fold(event for _, event in events)  # the work's state machine accepts its history
        assert state is not None and state.status in ("success", "failure", "cancelled"), (work_id, events)
        assert sum(ev.is_final(event) for _, event in events) == 1  # finished exactly once
        assert sum(isinstance(event, ev.Started) for _, event in events) <= 1  # run at most once
        final[work_id] = (state.status, events)

    for work_id in sim.ids:
        status, events = final[work_id]
        before = sim.precursors[work_id]
        all_succeeded = all(final[p][0] == "success" for p in before)
        if all_succeeded:  # it ran, and only after every precursor had succeeded
            started = next(seq for seq, event in events if isinstance(event, ev.Started))
            for p in before:
                succeeded = next(seq for seq, event in final[p][1] if isinstance(event, ev.Succeeded))
                assert succeeded < started, (p, work_id)
            assert status == ("failure" if sim.ids.index(work_id) in failing else "success")
        else:  # a precursor failed or was cancelled: it never ran, and the reason names one
            assert status == "cancelled" and not any(isinstance(e, ev.Started) for _, e in events)
            reason = next(event.reason for _, event in events if isinstance(event, ev.Cancelled))
            named = reason.split()[1]
            assert reason.startswith("precursor ") and named in before and final[named][0] != "success", reason
