"""Works that wait: which waiting works wait for what, and what to do when that changes.

A work deposited with ``waits`` (precursors, a ``not_before`` time) is in no bucket. The
resolver (:mod:`workflow.followers.resolver`) reads the log in order and feeds each event to a
:class:`Registry`, which answers what to write: a :class:`Release` (a ``Requeued`` that
puts the work in its bucket) or a :class:`Cancel`, by the work's rule (``waits.when``,
from its ``config["if"]``: :func:`condition_of`):

- ``success`` (the default): released once every precursor succeeded and its time has
  come; cancelled as soon as one failed for good or was cancelled (naming it);
- ``always``: released once every precursor finished, whatever the outcome;
- ``failure``: released once every precursor finished and at least one did not succeed;
  cancelled ("skipped") once they all finished and all succeeded;
- an expression over earlier steps (``pipeline.fetch.status == 'failure'``,
  :mod:`workflow.core.conditions`): waits as ``always``, then is judged on the statuses of
  the steps it names (``config["if_steps"]``: their works) and released if true, else
  cancelled as skipped; the reason written says the expression, true or false, and the
  statuses it was judged on (:func:`judge`), so a replay of the log shows why.

Kept pure (no I/O, the clock passed in) so every case is tested without a server; the
resolver does the writes, each with the CAS against the waiting work's head, so two
resolvers act exactly once.

While the resolver catches up with the log (``live`` False), the registry only builds
its state: acting on a history that later events already resolved would only produce
refused writes. :meth:`Registry.go_live` then says what is due, all at once.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, cast

from workflow.core import conditions
from workflow.core.errors import ValidationError
from workflow.core.events import AnyEvent, Cancelled, Deposited, Failed, Notified, Requeued, Succeeded, is_final
from workflow.core.filters import as_unix
from workflow.core.work import Work

#: The rule a waiting work is released by (a configuration step's ``if``).
Condition = Literal["success", "failure", "always"]
CONDITIONS: tuple[Condition, ...] = ("success", "failure", "always")


def condition_of(work: Work) -> Condition:
    """The rule a work with precursors waits by: its ``config["if"]`` (``success`` when
    absent; an expression over earlier steps waits as ``always``, for every precursor to
    finish, then is judged: :func:`judge`; an unknown value is refused where the work is
    written, see :func:`check_condition`)."""
    written = (work.config or {}).get("if")
    if written in CONDITIONS:
        return cast(Condition, written)
    return "always" if isinstance(written, str) and written.strip() else "success"


def check_condition(work: Work) -> Condition:
    """:func:`condition_of`, refusing (ValidationError) a ``config["if"]`` that is no rule
    and no expression, or an expression whose steps' works (``config["if_steps"]``: step ->
    work ids) are not given or not among the work's precursors (it would never be judged)."""
    config = work.config or {}
    written = config.get("if", "success")
    if written in CONDITIONS:
        return cast(Condition, written)
    if not isinstance(written, str):
        raise ValidationError("config", f"config['if'] is one of {', '.join(CONDITIONS)} or an expression, "
                                        f"got {written!r}")
    try:
        expression = conditions.parse(written)
    except conditions.ExpressionError as error:
        raise ValidationError("config", f"config['if'] {written!r}: at {error.offset + 1}: {error.message}") from None
    steps = config.get("if_steps") or {}
    precursors = set(map(str, work.precursors or []))
    for named in conditions.steps_named(expression):
        ids = steps.get(named.step) if isinstance(steps, dict) else None
        if not isinstance(ids, list) or not ids or not set(map(str, ids)) <= precursors:
            raise ValidationError("config", f"config['if'] judges step {named.step}: config['if_steps'] must list "
                                            "its works, each among the work's precursors")
    return "always"


def judge(work: Work, not_succeeded: dict[str, str]) -> tuple[bool, str]:
    """Whether a work whose ``config["if"]`` is an expression runs, once every precursor
    finished (``not_succeeded``: those that did not succeed, and how they ended), and why:
    the expression with the statuses it was judged on, for the log."""
    config = work.config or {}
    expression = conditions.parse(str(config["if"]))
    statuses = {
        step: conditions.step_status(not_succeeded.get(str(work_id), "succeeded") for work_id in ids)
        for step, ids in (config.get("if_steps") or {}).items()
    }
    verdict = conditions.evaluate(expression, statuses, all_succeeded=not not_succeeded)
    named = list(dict.fromkeys(comparison.step for comparison in conditions.steps_named(expression)))
    judged = [f"{step} {statuses[step]}" for step in named]
    if any(isinstance(part, conditions.Call) and part.name != "always" for part in _calls(expression)):
        judged.append("every precursor succeeded" if not not_succeeded else f"{len(not_succeeded)} did not succeed")
    return verdict, f"if {conditions.render(expression)}: {str(verdict).lower()} ({'; '.join(judged) or 'always'})"


def _calls(expression: conditions.Expression) -> list[conditions.Call]:
    if isinstance(expression, conditions.Call):
        return [expression]
    if isinstance(expression, conditions.Not):
        return _calls(expression.operand)
    if isinstance(expression, (conditions.And, conditions.Or)):
        return _calls(expression.left) + _calls(expression.right)
    return []


@dataclass
class Waiting:
    """One waiting work: its deposited snapshot, its head (for the CAS), what it waits for."""

    work_id: str
    work: Work
    seq: int  # the last stream sequence seen on the work's subjects: the CAS of the release
    pending: set[str]  # precursors not known to have succeeded (``success``) or finished (the others)
    not_before: float | None
    when: Condition = "success"
    #: Finished precursors that did not succeed, and how they ended ("failed", "was cancelled").
    not_succeeded: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Release:
    """Put the work in its bucket (a ``Requeued`` with ``reason``)."""

    waiting: Waiting
    reason: str


@dataclass(frozen=True)
class Cancel:
    """Cancel the work (a ``Cancelled`` with ``reason``, naming the precursor that did not
    succeed, if one is the cause: ``precursor``, with its ``outcome``)."""

    waiting: Waiting
    reason: str
    precursor: str | None = None
    outcome: str | None = None


Action = Release | Cancel


def precursor_outcome(event: AnyEvent | None) -> str | None:
    """What a precursor's (head or new) event means to the works waiting for it:
    ``succeeded``, ``failed`` or ``was cancelled``; None while it may still succeed."""
    if isinstance(event, Succeeded):
        return "succeeded"
    if isinstance(event, Cancelled):
        return "was cancelled"
    if isinstance(event, Failed) and is_final(event):
        return "failed"
    if isinstance(event, Notified):  # follows only an ended work, and says how it ended
        return {"success": "succeeded", "failure": "failed", "cancelled": "was cancelled"}.get(event.status)
    return None


@dataclass
class Registry:
    """The waiting works one resolver knows of, the precursors they wait for, its timers."""

    live: bool = False
    works: dict[str, Waiting] = field(default_factory=dict)
    _watchers: dict[str, set[str]] = field(default_factory=dict)  # precursor id -> waiting work ids
    _timers: list[tuple[float, str]] = field(default_factory=list)  # (not_before, work id), a heap

    def observe(self, seq: int, work_id: str, event: AnyEvent | None, now: float) -> list[Action]:
        """One message of the log, in stream order (``event`` None: not a valid event).

        Returns what to write now (nothing while catching up)."""
        waiting = self.works.get(work_id)
        if waiting is not None:
            waiting.seq = seq  # any message on its subjects moves the head the CAS names
            if isinstance(event, (Requeued, Cancelled)):  # released, or cancelled, by anyone
                self._forget(work_id)
        if isinstance(event, Deposited) and event.waits is not None and work_id not in self.works:
            self.works[work_id] = Waiting(
                work_id, event.work, seq, set(event.waits.precursors) - {work_id}, event.waits.not_before,
                event.waits.when,
            )
            for precursor in self.works[work_id].pending:
                self._watchers.setdefault(precursor, set()).add(work_id)
            return []  # the resolver reads its precursors' heads, then calls ``check``
        outcome = precursor_outcome(event)
        return [] if outcome is None else self.precursor(work_id, outcome, now)

    def precursor(self, precursor: str, outcome: str, now: float) -> list[Action]:
        """``precursor`` succeeded, failed or was cancelled: what follows for its waiters."""
        actions: list[Action] = []
        for work_id in sorted(self._watchers.get(precursor, ())):
            waiting = self.works[work_id]
            if outcome == "succeeded" or waiting.when != "success":  # one more precursor done with
                waiting.pending.discard(precursor)
                self._watchers[precursor].discard(work_id)
                if outcome != "succeeded":
                    waiting.not_succeeded.setdefault(precursor, outcome)
                actions += self.check(work_id, now)
            elif self.live:
                self._forget(work_id)
                actions.append(Cancel(waiting, f"precursor {precursor} {outcome}", precursor, outcome))
            else:  # catching up: noted, and the work is cancelled on going live (``check``)
                waiting.not_succeeded.setdefault(precursor, outcome)
        if not self._watchers.get(precursor):
            self._watchers.pop(precursor, None)
        return actions

    def check(self, work_id: str, now: float) -> list[Action]:
        """Release the work if nothing is left to wait for, else set its timer (live only)."""
        waiting = self.works.get(work_id)
        if waiting is None or not self.live:
            return []
        if waiting.when == "success" and waiting.not_succeeded:  # one failed while catching up
            precursor, outcome = next(iter(waiting.not_succeeded.items()))
            self._forget(work_id)
            return [Cancel(waiting, f"precursor {precursor} {outcome}", precursor, outcome)]
        if waiting.pending:
            return []
        if waiting.not_before is not None and waiting.not_before > now:
            heapq.heappush(self._timers, (waiting.not_before, work_id))
            return []
        self._forget(work_id)
        return [_decision(waiting)]

    def concerns(self, work_id: str) -> bool:
        """Whether an event of ``work_id`` can matter (a waiting work, or one waited for):
        the resolver decodes no other event but a waiting deposit."""
        return work_id in self.works or work_id in self._watchers

    def pending_precursors(self) -> set[str]:
        """Every precursor some waiting work still waits for (their heads are read on going live)."""
        return set(self._watchers)

    def go_live(self, now: float) -> list[Action]:
        """The log is read up to now: from here on, say what to do; first, everything due."""
        self.live = True
        return [action for work_id in sorted(self.works) for action in self.check(work_id, now)]

    def next_due(self) -> float | None:
        """When the earliest timer fires (None: no timer)."""
        return self._timers[0][0] if self._timers else None

    def due(self, now: float) -> list[Action]:
        """The releases whose time has come."""
        actions: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            _, work_id = heapq.heappop(self._timers)
            waiting = self.works.get(work_id)
            if waiting is not None and not waiting.pending:  # else released or cancelled meanwhile
                self._forget(work_id)
                actions.append(_decision(waiting))
        return actions

    def _forget(self, work_id: str) -> None:
        waiting = self.works.pop(work_id, None)
        if waiting is None:
            return
        for precursor in waiting.pending:
            watchers = self._watchers.get(precursor)
            if watchers is not None:
                watchers.discard(work_id)
                if not watchers:
                    del self._watchers[precursor]


def _decision(waiting: Waiting) -> Action:
    """What becomes of a work with nothing left to wait for, by its rule (or its expression:
    released if true, else cancelled as skipped; either way the reason says why)."""
    if (waiting.work.config or {}).get("if") not in (*CONDITIONS, None):
        try:
            verdict, why = judge(waiting.work, waiting.not_succeeded)
        except (conditions.ExpressionError, KeyError, TypeError) as error:  # written past the checks: never run
            return Cancel(waiting, f"skipped: its if cannot be judged ({error!r})")
        return Release(waiting, f"released: {why}") if verdict else Cancel(waiting, f"skipped: {why}")
    if waiting.when == "failure" and not waiting.not_succeeded:
        return Cancel(waiting, "skipped: if failure, and every precursor succeeded")
    return Release(waiting, _release_reason(waiting))


def _release_reason(waiting: Waiting) -> str:
    precursors = waiting.work.precursors or []
    parts = []
    if precursors and waiting.when != "success":
        failed = list(waiting.not_succeeded)
        parts.append(f"precursors finished (if {waiting.when}"
                     + (f"; {len(failed)} did not succeed, e.g. {failed[0]})" if failed else ")"))
    elif precursors:
        parts.append("precursors succeeded" if len(precursors) > 3 else
                     f"{', '.join(map(str, precursors))} succeeded")
    if waiting.not_before is not None:
        parts.append("its time came")
    return "released: " + " and ".join(parts or ["nothing to wait for"])


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def not_before(delay: float | str | timedelta | None, at: float | str | datetime | None, now: float) -> float | None:
    """The earliest time a work may enter its bucket, from a ``delay`` (seconds, a
    timedelta, or ``30s``/``5m``/``2h``) or an ``at`` time (unix seconds, a datetime, or
    ISO-8601 text; naive means UTC). None for neither. ValidationError for both or a bad one."""
    if delay is not None and at is not None:
        raise ValidationError("delay", "give a delay or a time (at), not both")
    if delay is not None:
        return now + _seconds(delay)
    return as_unix(at, "at")


def _seconds(delay: float | str | timedelta) -> float:
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, str):
        text = delay.strip().lower()
        try:
            seconds = float(text[:-1]) * _UNITS[text[-1]] if text[-1:] in _UNITS else float(text)
        except ValueError:
            raise ValidationError("delay", f"expected a duration like 30s, 5m or 2h, got {delay!r}") from None
    else:
        seconds = float(delay)
    if not seconds >= 0:
        raise ValidationError("delay", f"expected a duration of zero or more, got {delay!r}")
    return seconds
