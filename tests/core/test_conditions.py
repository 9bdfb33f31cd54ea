"""``if:`` expressions over earlier steps: read like users write them, judged without eval.

The property test writes random expressions in every spelling the language allows
(``and``/``&&``, ``not``/``!``, status left or right, extra parentheses) and checks the
evaluator against Python's own ``not``/``and``/``or`` over the same comparisons: the same
precedence and the same truth for any statuses.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflow.core import conditions
from workflow.core import events as ev
from workflow.core.conditions import STATUSES, ExpressionError, parse
from workflow.core.errors import ValidationError
from workflow.core.waits import Cancel, Registry, Release, check_condition
from workflow.core.work import Work

STEPS = ["fetch", "beams", "stage_1-a"]


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> tuple[str, str]:
    """(text in the language, the same in Python over ``status``, ``ok`` and ``bad``)."""
    kind = draw(st.sampled_from(["compare", "call"] + (["not", "and", "or", "paren"] if depth else [])))
    if kind == "compare":
        step, status, equal = draw(st.sampled_from(STEPS)), draw(st.sampled_from(STATUSES)), draw(st.booleans())
        operator = "==" if equal else "!="
        quote = draw(st.sampled_from(["'", '"']))
        reference, literal = f"pipeline.{step}.status", f"{quote}{status}{quote}"
        text = f"{reference} {operator} {literal}" if draw(st.booleans()) else f"{literal}{operator}{reference}"
        return text, f"(status[{step!r}] {operator} {status!r})"
    if kind == "call":
        name = draw(st.sampled_from(conditions.FUNCTIONS))
        return f"{name}()", {"success": "ok", "failure": "bad", "always": "True"}[name]
    if kind == "paren":
        text, python = draw(expressions(depth - 1))
        return f"( {text} )", f"({python})"
    if kind == "not":
        text, python = draw(expressions(depth - 1))
        return f"{draw(st.sampled_from(['not ', '!', '! ']))}{text}", f"not {python}"
    (left, left_py), (right, right_py) = draw(expressions(depth - 1)), draw(expressions(depth - 1))
    word = draw(st.sampled_from(["and", "&&"] if kind == "and" else ["or", "||"]))
    return f"{left} {word} {right}", f"{left_py} {kind} {right_py}"


@settings(max_examples=400, deadline=None)
@given(expressions(), st.fixed_dictionaries({step: st.sampled_from(STATUSES) for step in STEPS}), st.booleans(),
       st.booleans())
def test_the_evaluator_agrees_with_python_on_any_expression_and_any_outcomes(written, status, ok, wrapped):
    text, python = written
    expression = parse(f"${{{{ {text} }}}}" if wrapped else text)
    model = eval(python, {"__builtins__": {}}, {"status": status, "ok": ok, "bad": not ok})  # the model, not the code
    assert conditions.evaluate(expression, status, all_succeeded=ok) is bool(model)
    assert parse(conditions.render(expression)) == expression  # the canonical text reads back the same
    assert {c.step for c in conditions.steps_named(expression)} <= set(STEPS)


@pytest.mark.parametrize(("text", "offset", "message"), [
    ("", 0, "the expression is empty"),
    ("pipeline.fetch.status = 'success'", 22, "unexpected '='"),
    ("pipeline.fetch.status == 'succeeded'", 25, "one of 'success', 'failure', 'cancelled'"),
    ("pipeline.fetch.status == 'skipped'", 25, "a skipped step is 'cancelled'"),
    ("pipeline.fetch.result == 'success'", 15, "only a step's status"),
    ("pipeline.fetch.status == success", 25, "a status is quoted: 'success'"),
    ("pipeline.fetch.status == fetch", 25, "expected pipeline.STEP.status or a quoted status, got 'fetch'"),
    ("(pipeline.fetch.status == 'success'", 35, "expected ')'"),
    ("pipeline.fetch.status == 'success' pipeline", 35, "expected and, or or the end"),
    ("'success' == 'failure'", 10, "compares two statuses"),
    ("pipeline.a.status == pipeline.b.status", 18, "compares two steps' statuses"),
    ("failure", 7, "expected '(' after failure"),
    ("success(x)", 8, "success() takes nothing"),
    ("success(1)", 8, "unexpected '1'"),
    ("__import__('os')", 0, "expected pipeline.STEP.status"),
    ("${{ pipeline.fetch.status == 'success }}", 29, "never closed"),
])
def test_a_bad_expression_says_where_and_what_was_expected(text, offset, message):
    with pytest.raises(ExpressionError) as raised:
        parse(text)
    assert raised.value.offset == offset and message in raised.value.message


def test_a_steps_status_is_failure_if_a_work_failed_cancelled_if_one_was_cancelled_else_success():
    assert conditions.step_status(["succeeded", "was cancelled", "failed"]) == "failure"
    assert conditions.step_status(["succeeded", "was cancelled"]) == "cancelled"
    assert conditions.step_status(["succeeded", "succeeded"]) == "success"


def waiting_for(work_id: str, expression: str, if_steps: dict[str, list[str]], precursors: list[str]) -> ev.Deposited:
    work = Work(pipeline="p", id=work_id, precursors=precursors, status="queued",
                config={"step": "branch", "if": expression, "if_steps": if_steps})
    return ev.Deposited(work_id=work_id, pipeline="p", time=0, work=work,
                        waits=ev.Waits(precursors=precursors, when=check_condition(work)))


def ended(work_id: str, how: str) -> ev.Event:
    if how == "succeeded":
        return ev.Succeeded(work_id=work_id, pipeline="p", time=0, attempt=1)
    return ev.Failed(work_id=work_id, pipeline="p", time=0, attempt=1, reason="error", will_retry=False)


@pytest.mark.parametrize(("outcome", "runs", "reason"), [
    ("failed", True, "released: if pipeline.fetch.status == 'failure': true (fetch failure)"),
    ("succeeded", False, "skipped: if pipeline.fetch.status == 'failure': false (fetch success)"),
])
def test_an_expression_waits_for_every_precursor_to_finish_then_runs_or_is_skipped_saying_why(outcome, runs, reason):
    registry = Registry(live=True)
    registry.observe(1, "w", waiting_for("w", "pipeline.fetch.status == 'failure'", {"fetch": ["f"]}, ["f", "g"]),
                     now=0)
    # fetch ends, but another precursor (another step of the earlier stage) has not: nothing yet
    assert registry.observe(2, "f", ended("f", outcome), now=0) == []
    [action] = registry.observe(3, "g", ended("g", "failed"), now=0)  # g's failure is no concern of this if
    assert isinstance(action, Release if runs else Cancel) and action.reason == reason
    assert registry.works == {}


def test_success_and_failure_in_an_expression_judge_every_precursor_and_the_reason_says_so():
    registry = Registry(live=True)
    registry.observe(1, "w", waiting_for("w", "${{ failure() && pipeline.fetch.status == 'success' }}",
                                         {"fetch": ["f"]}, ["f", "g"]), now=0)
    registry.observe(2, "f", ended("f", "succeeded"), now=0)
    [action] = registry.observe(3, "g", ended("g", "failed"), now=0)
    assert isinstance(action, Release)
    assert action.reason == ("released: if failure() and pipeline.fetch.status == 'success': true "
                             "(fetch success; 1 did not succeed)")


def test_a_work_written_with_an_if_it_cannot_be_judged_on_is_refused_at_deposit():
    def work(expression: object, if_steps: object) -> Work:
        return Work(pipeline="p", id="w", precursors=["f"], config={"if": expression, "if_steps": if_steps})

    assert check_condition(work("pipeline.fetch.status == 'failure'", {"fetch": ["f"]})) == "always"
    for bad, steps in [("pipeline.fetch.status == 'nope'", {"fetch": ["f"]}),
                       ("pipeline.fetch.status == 'failure'", None),
                       ("pipeline.fetch.status == 'failure'", {"fetch": ["not-a-precursor"]}),
                       (3, None)]:
        with pytest.raises(ValidationError):
            check_condition(work(bad, steps))
