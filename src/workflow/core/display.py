"""How events and times read to a person: shared by the CLI, the demo and the TUI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from workflow.core import events as ev


def when(timestamp: float | None) -> str:
    """A unix time as UTC with milliseconds (``-`` when unset)."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def describe(event: ev.AnyEvent) -> str:
    """One line saying what an event means, for ``workflow history``."""
    match event:
        case ev.Deposited(work=work):
            return f"deposited in {work.pipeline}/{work.site} at priority {work.priority}"
        case ev.Requeued(work=work, reason=reason):
            return f"requeued at priority {work.priority}, site {work.site}" + (f": {reason}" if reason else "")
        case ev.Started(attempt=attempt, host=host):
            return f"attempt {attempt} started on {host}"
        case ev.Succeeded(attempt=attempt, results=results):
            return f"attempt {attempt} succeeded" + (f": {json.dumps(results)[:120]}" if results else "")
        case ev.Failed(attempt=attempt, reason=reason, error=error, will_retry=will_retry, retry_in=retry_in):
            if not will_retry:
                then = "; no retry left"
            else:
                then = "; retry" if retry_in is None else f"; retry in {retry_in:.1f}s"
            return f"attempt {attempt} failed ({reason}){': ' + error[:120] if error else ''}{then}"
        case ev.Cancelled(reason=reason):
            return "cancelled" + (f": {reason}" if reason else "")
    return type(event).__name__
