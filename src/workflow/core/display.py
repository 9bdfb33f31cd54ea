"""How events and times read to a person: shared by the CLI, the demo and the TUI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import assert_never
from zoneinfo import ZoneInfo

from workflow.core import events as ev
from workflow.core.products import ArchivedFile
from workflow.core.waits import CONDITIONS
from workflow.core.work import Work


def when(timestamp: float | None) -> str:
    """A unix time as UTC with milliseconds (``-`` when unset)."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def when_in(timestamp: float | None, timezone: str | None) -> str:
    """A firing time in its schedule's zone and in UTC (``2026-12-07 02:00:00 PST (2026-12-07 10:00:00Z)``),
    or as :func:`when` for a schedule in UTC: operators read the zone, the log says UTC."""
    if timestamp is None or timezone is None:
        return when(timestamp)
    local = datetime.fromtimestamp(timestamp, tz=ZoneInfo(timezone))
    return f"{local:%Y-%m-%d %H:%M:%S %Z} ({datetime.fromtimestamp(timestamp, tz=UTC):%Y-%m-%d %H:%M:%S}Z)"


def counted(number: int, noun: str) -> str:
    """``1 pipeline``, ``2 pipelines``, ``0 events``: a count with its noun, in the right number."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def waits_of(work: Work) -> str:
    """What a waiting work waits for, for ``show``, ``ls`` and the TUI (empty if it does not
    wait): its precursors and the time it may start (a waiting work's ``start``)."""
    if work.status != "waiting":
        return ""
    parts = []
    if work.precursors:
        first = str(work.precursors[0])
        parts.append(f"after {first}" + (f" and {len(work.precursors) - 1} more" if len(work.precursors) > 1 else ""))
    if work.start is not None:
        parts.append(f"not before {when(work.start)}")
    return "; ".join(parts) or "to be released"


def waiting(waits: ev.Waits | None, work: Work | None = None) -> str:
    """What a waiting deposit waits for, as the end of a sentence (empty if nothing). A
    configuration step whose ``if`` is an expression waits for its precursors to finish
    and is then judged on it: the sentence quotes the expression (from ``work``)."""
    if waits is None:
        return ""
    parts = []
    if waits.precursors:
        written = (work.config or {}).get("if") if work is not None else None
        judged = f"if {written.strip()}" if isinstance(written, str) and written.strip() not in CONDITIONS else (
            f"if {waits.when}")
        parts.append("for " + ", ".join(waits.precursors)
                     + (" to succeed" if waits.when == "success" else f" to finish ({judged})"))
    if waits.not_before is not None:
        parts.append(f"until {when(waits.not_before)}")
    return "; waiting " + " and ".join(parts)


def archived_count(archived: list[ArchivedFile] | None) -> str:
    """``; 2 files archived`` (empty when the attempt returned none)."""
    if not archived:
        return ""
    stored = sum(1 for item in archived if item.uri is not None and item.method in ("copy", "move"))
    return f"; {stored} of {len(archived)} returned files archived" if stored != len(archived) else (
        f"; {stored} file{'s' if stored != 1 else ''} archived")


def describe(event: ev.AnyEvent) -> str:
    """One line saying what an event means, for ``workflow history``."""
    match event:
        case ev.Deposited(work=work, waits=waits):
            return f"deposited in {work.pipeline}/{work.site} at priority {work.priority}" + waiting(waits, work)
        case ev.Requeued(work=work, reason=reason):
            return f"requeued at priority {work.priority}, site {work.site}" + (f": {reason}" if reason else "")
        case ev.Started(attempt=attempt, host=host, via=via):
            return f"attempt {attempt} started on {host}" + (f" (claimed by {via})" if via != "bucket" else "")
        case ev.Succeeded(attempt=attempt, results=results, archived=archived):
            return (f"attempt {attempt} succeeded" + (f": {json.dumps(results)[:120]}" if results else "")
                    + archived_count(archived))
        case ev.Failed(attempt=attempt, reason=reason, error=error, will_retry=will_retry, retry_in=retry_in):
            if not will_retry:
                then = "; no retry left"
            else:
                then = "; retry" if retry_in is None else f"; retry in {retry_in:.1f}s"
            return f"attempt {attempt} failed ({reason}){': ' + error[:120] if error else ''}{then}"
        case ev.Cancelled(reason=reason):
            return "cancelled" + (f": {reason}" if reason else "")
        case ev.Deleted(reason=reason, products_removed=removed):
            return ("deleted (hidden from lists; its history stays)" + (f": {reason}" if reason else "")
                    + (f"; {len(removed)} archived files removed" if removed else ""))
        case ev.Notified(status=status, ok=ok, attempts=attempts, reply=reply, error=error):
            tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
            if not ok:
                return f"notification of {status} failed after {tries}" + (f": {error[:120]}" if error else "")
            return f"notified of {status} ({tries})" + (f": {', '.join(sorted(reply))}" if reply else "")
    assert_never(event)  # a new event type must be worded here (mypy and tests/results/test_every_event_type.py)
