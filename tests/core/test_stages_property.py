"""A model of stages and ``if`` over random outcomes, checked against the real rules: random
configurations (core.configs plans the works, as a deploy does) run through the resolver's
``Registry`` (core.waits) with a worker pool taking queued works in any order and any works
failing. What happens must be what the rules of a configuration say (see core/configs.py):

- a ``success`` step runs once every earlier-stage work succeeded, else is skipped naming
  one that did not;
- an ``always`` step runs once they all finished; a ``failure`` step once they all finished
  and one did not succeed, else it is skipped;
- a step whose ``if`` is an expression over earlier steps runs once they all finished, if
  the expression holds over the statuses of the steps it names (Python's ``and``/``or``/
  ``not`` over the model's statuses), else it is skipped saying so;
- each work finishes exactly once, and none starts before what it follows has finished;
- all of it also when the resolver is away while works finish and starts again (it reads
  the log from the start, then the heads of what is still pending, then goes live).
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from ulid import ULID

from workflow.core import events as ev
from workflow.core.conditions import STATUSES
from workflow.core.configs import parse, plan
from workflow.core.fold import fold
from workflow.core.waits import Cancel, Registry, Release, check_condition, precursor_outcome


@st.composite
def configurations(draw):
    """Up to 4 stages of 1-2 steps (1-2 works each), later ones with any ``if``, and up to
    2 conditional steps without a stage; which works fail when run."""
    stages = draw(st.integers(1, 4))
    lines = ["name: model", "steps:"]
    count = 0
    stage_of: dict[str, int] = {}
    for stage in range(1, stages + 1):
        for _ in range(draw(st.integers(1, 2))):
            earlier = [name for name, s in stage_of.items() if s < stage]
            condition = "success" if stage == 1 else draw(st.sampled_from(["success", "failure", "always", "expr"]))
            if condition == "expr":
                condition = f'"{draw(expressions(earlier))}"'
            width = draw(st.integers(1, 2))  # (a key of its own: an if judges every work of a step it names)
            lines.append(f"  - {{name: s{count}, stage: {stage}, if: {condition}, "
                         f"matrix: {{i{count}: {{range: {width}}}}}, work: {{pipeline: p}}}}")
            stage_of[f"s{count}"] = stage
            count += 1
    for _ in range(draw(st.integers(0, 2))):
        condition = draw(st.sampled_from(["success", "failure", "always", "expr"]))
        if condition == "expr":
            condition = f'"{draw(expressions(list(stage_of)))}"'
        lines.append(f"  - {{name: s{count}, if: {condition}, work: {{pipeline: p}}}}")
        count += 1
    return "\n".join(lines) + "\n", draw(st.randoms(use_true_random=False))


def expressions(steps: list[str], depth: int = 2) -> st.SearchStrategy[str]:
    """An ``if`` expression over ``steps`` (the language's own spelling, ``and``/``&&``…)."""
    compare = st.builds(lambda step, op, status: f"pipeline.{step}.status {op} '{status}'",
                        st.sampled_from(steps), st.sampled_from(["==", "!="]), st.sampled_from(STATUSES))
    leaf = st.one_of(compare, st.sampled_from(["success()", "failure()", "always()"]))
    if depth == 0:
        return leaf
    inner = expressions(steps, depth - 1)
    return st.one_of(
        leaf,
        st.builds(lambda a, word, b: f"{a} {word} {b}", inner, st.sampled_from(["and", "&&", "or", "||"]), inner),
        st.builds(lambda a: f"not ({a})", inner),
    )


def python_of(expression: str) -> str:
    """The same expression for Python's ``eval`` over ``status`` (step -> status) and ``ok``."""
    python = re.sub(r"pipeline\.(\w+)\.status", r"status['\1']", expression)
    python = python.replace("&&", " and ").replace("||", " or ")
    return python.replace("success()", "ok").replace("failure()", "(not ok)").replace("always()", "True")


class Simulation:
    """The log (every event, in order), the resolver's registry, and the queued works."""

    def __init__(self) -> None:
        self.log: list[tuple[int, ev.AnyEvent]] = []
        self.registry = Registry()
        self.queued: list[str] = []

    def append(self, event: ev.AnyEvent) -> None:
        self.log.append((len(self.log) + 1, event))
        if isinstance(event, ev.Requeued) or (isinstance(event, ev.Deposited) and event.waits is None):
            self.queued.append(event.work_id)
        for action in self.registry.observe(len(self.log), event.work_id, event, float(len(self.log))):
            self.act(action)

    def act(self, action: Release | Cancel) -> None:
        waiting = action.waiting
        assert max(seq for seq, e in self.log if e.work_id == waiting.work_id) == waiting.seq  # the CAS
        common = {"work_id": waiting.work_id, "pipeline": "p", "time": 0.0}
        if isinstance(action, Release):
            self.append(ev.Requeued(**common, work=waiting.work, reason=action.reason))
        else:
            self.append(ev.Cancelled(**common, reason=action.reason))

    def deposit(self, works) -> None:
        """One deposit call, as log/deposits makes the waits: nothing has finished yet."""
        for work in works:
            precursors = [str(p) for p in work.precursors or []]
            waits = ev.Waits(precursors=precursors, when=check_condition(work)) if precursors else None
            self.append(ev.Deposited(work_id=work.id, pipeline="p", time=0.0, work=work, waits=waits))
        for action in self.registry.go_live(0.0):
            self.act(action)

    def restart(self) -> None:
        """A resolver (re)starts: a new registry reads the whole log, not live, then reads the
        heads of the precursors still pending, then goes live (as the resolver's ``_go_live``)."""
        self.registry = Registry()
        for seq, event in self.log:
            assert self.registry.observe(seq, event.work_id, event, 0.0) == []  # nothing while catching up
        actions = []
        for precursor in sorted(self.registry.pending_precursors()):
            head = [e for _, e in self.log if e.work_id == precursor][-1]
            outcome = precursor_outcome(head)
            if outcome is not None:
                actions += self.registry.precursor(precursor, outcome, 0.0)
        actions += self.registry.go_live(0.0)
        for action in actions:
            self.act(action)

    def run(self, work_id: str, fails: bool) -> None:
        self.queued.remove(work_id)
        common = {"work_id": work_id, "pipeline": "p", "time": 0.0, "attempt": 1}
        self.append(ev.Started(**common, queue_seq=1))
        if fails:
            self.append(ev.Failed(**common, reason="error", will_retry=False))
        else:
            self.append(ev.Succeeded(**common))


@settings(max_examples=300, deadline=None)
@given(configurations(), st.data())
def test_stages_and_conditions_over_random_outcomes_follow_the_rules(configuration, data):
    text, rng = configuration
    config = parse(text)
    planned_works = plan(config, str(ULID()), 0.0).works
    works = [planned.work for planned in planned_works]
    failing = {work.id for work in works if rng.random() < 0.3}
    sim = Simulation()
    sim.deposit(works)
    while sim.queued:  # a worker pool takes the queued works in any order
        work_id = data.draw(st.sampled_from(sorted(sim.queued)))
        if data.draw(st.booleans()):  # the resolver is away while the work runs, and starts again
            sim.registry = Registry()  # (one that acts on nothing meanwhile)
            sim.run(work_id, fails=work_id in failing)
            sim.restart()
        else:
            sim.run(work_id, fails=work_id in failing)

    events_of = {work.id: [(seq, e) for seq, e in sim.log if e.work_id == work.id] for work in works}
    status = {}
    for work in works:  # each finished exactly once, through its state machine
        state = fold(e for _, e in events_of[work.id])
        assert state is not None and state.status in ("success", "failure", "cancelled"), events_of[work.id]
        assert sum(ev.is_final(e) for _, e in events_of[work.id]) == 1
        status[work.id] = state.status

    def final_seq(work_id: str) -> int:
        return next(seq for seq, e in events_of[work_id] if ev.is_final(e))

    step_of = {planned.work.id: planned.step for planned in planned_works}

    def step_status(step: str) -> str:  # the model's: failure if one failed, cancelled if one was, else success
        seen = {status[w] for w, s in step_of.items() if s == step}
        return "failure" if "failure" in seen else "cancelled" if "cancelled" in seen else "success"

    for work in works:  # the model, in plan order (what a work follows comes first)
        before = [str(p) for p in work.precursors or []]
        outcomes = [status[p] == "success" for p in before]
        rule = check_condition(work)
        runs = {"success": all(outcomes), "always": True, "failure": not all(outcomes)}[rule]
        expression = work.config["if"] if work.config.get("if") not in (None, "failure", "always") else None
        if expression is not None:  # judged by Python over the model's statuses, not by the code under test
            statuses = {step: step_status(step) for step in set(step_of.values())}
            runs = bool(eval(python_of(expression), {"__builtins__": {}}, {"status": statuses, "ok": all(outcomes)}))
        events = events_of[work.id]
        started = [seq for seq, e in events if isinstance(e, ev.Started)]
        if runs:
            assert status[work.id] == ("failure" if work.id in failing else "success"), (rule, work.config)
            assert all(final_seq(p) < started[0] for p in before)  # only after what it follows finished
        else:
            assert status[work.id] == "cancelled" and not started, (rule, outcomes, events)
            cancel = next(e for _, e in events if isinstance(e, ev.Cancelled))
            if expression is not None:
                assert cancel.reason.startswith("skipped: if ") and ": false (" in cancel.reason, cancel.reason
            elif rule == "success":  # skipped naming one that did not succeed
                named = cancel.reason.split()[1]
                assert named in before and status[named] != "success", cancel.reason
            else:
                assert cancel.reason.startswith("skipped: if failure"), cancel.reason
