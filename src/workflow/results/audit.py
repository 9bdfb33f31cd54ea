"""The audit: the log checked against the projection, anomalies listed.

``workflow audit`` asks the results service, which runs :func:`audit` on its own tables
(nobody opens the live database behind the projector's back). What counts as an anomaly:

- ``rejected``: a message of the log the projector refused (see the ``rejected`` table);
- ``overdue``: a work ``running`` past its start + timeout + one lease: no worker holds it
  any more, and nothing recorded the loss;
- ``attempts``: more starts in one chain (since the work was last queued) than
  ``retries + 1``;
- ``refold``: a work whose projected row differs from the fold (``core.fold``) of its
  events, or whose events do not fold at all;
- ``gap``: stream sequences (from the log's first) in none of ``events``, ``rejected`` and
  ``other`` (a schedule's events);
- ``aged-out``: the first sequences of the log left it (retention) before this projection
  saw them: whatever they said is unknown here;
- ``stranded``: an unfinished work whose queue message (its last ``Deposited`` or
  ``Requeued``) aged out of the log: no bucket holds it any more, so no worker will run
  it until someone re-queues it (``workflow requeue ID``);
- ``notify``: a work's notification the notifier gave up on (a ``Notified`` with ``ok``
  false: Slack or the webhook kept refusing it, or it had no token).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import msgspec

from workflow.core import events as ev
from workflow.core.errors import FoldError, WorkflowError
from workflow.core.fold import fold
from workflow.core.status import FINISHED
from workflow.core.work import Work
from workflow.results.columns import WORK_COLUMNS, quote
from workflow.results.projection import row_to_work

#: Anomalies an answer of the results service lists at most (it says how many there are).
MAX_ANOMALIES = 1000


class Anomaly(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: str
    detail: str
    seq: int | None = None
    work_id: str | None = None


_GAPS = """
SELECT seq + 1, next - 1 FROM (
    SELECT seq, lead(seq) OVER (ORDER BY seq) AS next
    FROM (SELECT seq FROM events UNION ALL SELECT seq FROM rejected UNION ALL SELECT seq FROM other
          UNION ALL SELECT ? - 1)
    WHERE seq >= ? - 1
) WHERE next > seq + 1 ORDER BY 1
"""
_STRANDED = f"""
SELECT w.id, q.seq, w.status FROM works w
JOIN (SELECT work_id, max(seq) AS seq FROM events WHERE type IN ('deposited', 'requeued') GROUP BY work_id) q
  ON q.work_id = w.id
WHERE w.status NOT IN ({", ".join(f"'{s}'" for s in sorted(FINISHED))}) AND q.seq < ?
ORDER BY w.id
"""
_NOTIFY_FAILED = """
SELECT seq, work_id, json_extract_string(payload, '$.status'), json_extract_string(payload, '$.error'),
       json_extract(payload, '$.attempts')
FROM events WHERE type = 'notified' AND json_extract(payload, '$.ok') = 'false'::JSON ORDER BY seq
"""
_OVERDUE = "SELECT id, start, timeout FROM works WHERE status = 'running' AND start + timeout + ? < ? ORDER BY id"


def audit(con: Any, *, now: float, lease: float, first_seq: int) -> list[Anomaly]:
    """Every anomaly in the tables of ``con`` (a cursor), given the time, the lease and
    the log's first sequence (earlier ones aged out: not gaps)."""
    found = [
        Anomaly(kind="rejected", seq=seq, detail=f"{reason} (on {subject})")
        for seq, subject, reason in con.execute("SELECT seq, subject, reason FROM rejected ORDER BY seq").fetchall()
    ]
    for work_id, start, timeout in con.execute(_OVERDUE, [lease, now]).fetchall():
        found.append(Anomaly(kind="overdue", work_id=work_id,
                             detail=f"running for {now - start:.0f}s, past its timeout {timeout}s + lease {lease:g}s"))
    [(checkpoint,)] = con.execute("SELECT coalesce(max(seq), 0) FROM checkpoint").fetchall()
    for low, high in con.execute(_GAPS, [max(first_seq, 1), max(first_seq, 1)]).fetchall():
        found.append(Anomaly(kind="gap", seq=low,
                             detail=f"sequences {low}..{high} are in none of events, rejected and other"))
    [(top,)] = con.execute("SELECT coalesce(max(seq), 0) FROM (SELECT seq FROM events UNION ALL "
                           "SELECT seq FROM rejected UNION ALL SELECT seq FROM other)").fetchall()
    if checkpoint > max(top, first_seq - 1):
        found.append(Anomaly(kind="gap", seq=top + 1, detail=f"sequences {top + 1}..{checkpoint} are missing"))
    for seq, work_id, status, error, attempts in con.execute(_NOTIFY_FAILED).fetchall():
        found.append(Anomaly(kind="notify", seq=seq, work_id=work_id,
                             detail=f"its notification of {status} failed after {attempts} attempt(s): {error}"))
    found.extend(_retention(con, first_seq))
    found.extend(_refold(con))
    return found


def _retention(con: Any, first_seq: int) -> list[Anomaly]:
    """What retention took before it was safe: events never projected, and unfinished
    works whose queue message is gone (the log is the buckets too)."""
    found = []
    [(lowest,)] = con.execute("SELECT min(seq) FROM (SELECT seq FROM events UNION ALL SELECT seq FROM rejected "
                              "UNION ALL SELECT seq FROM other)").fetchall()
    if lowest is not None and lowest > 1:
        found.append(Anomaly(kind="aged-out", seq=1, detail=f"sequences 1..{lowest - 1} left the log before this "
                             "projection saw them"))
    for work_id, seq, status in con.execute(_STRANDED, [first_seq]).fetchall():
        found.append(Anomaly(kind="stranded", work_id=work_id, seq=seq,
                             detail=f"{status}, but its queue message (sequence {seq}) aged out of the log "
                             f"(it now starts at {first_seq}): no worker will take it; requeue it"))
    return found


def _histories(con: Any) -> Iterator[tuple[str, list[ev.AnyEvent] | str]]:
    """Each work's events, decoded in order (or why they do not decode)."""
    cursor = con.execute("SELECT work_id, payload FROM events ORDER BY work_id, seq")
    rows = iter(lambda: cursor.fetchmany(10_000), [])
    for work_id, group in itertools.groupby(itertools.chain.from_iterable(rows), key=lambda row: row[0]):
        try:
            yield work_id, [ev.decode(payload.encode()) for _, payload in group]
        except WorkflowError as error:
            yield work_id, f"an event does not decode: {error}"


def _refold(con: Any) -> list[Anomaly]:
    """Works whose row is not the fold of their events; chains with too many starts."""
    columns = ", ".join(quote(c) for c in WORK_COLUMNS)
    at = WORK_COLUMNS.index("id")
    rows = {row[at]: row for row in con.cursor().execute(f"SELECT {columns} FROM works").fetchall()}
    found = []
    for work_id, history in _histories(con):
        row = rows.pop(work_id, None)
        if isinstance(history, str):
            found.append(Anomaly(kind="refold", work_id=work_id, detail=history))
            continue
        found.extend(_chains(work_id, history))
        try:
            folded = fold(history)
        except FoldError as error:
            found.append(Anomaly(kind="refold", work_id=work_id, detail=f"its events do not fold: {error}"))
            continue
        projected = None if row is None else row_to_work(dict(zip(WORK_COLUMNS, row, strict=True)))
        if projected != folded:
            found.append(Anomaly(kind="refold", work_id=work_id, detail=_difference(projected, folded)))
    for work_id in rows:
        found.append(Anomaly(kind="refold", work_id=work_id, detail="a works row with no events"))
    return found


def _chains(work_id: str, history: list[ev.AnyEvent]) -> list[Anomaly]:
    """Chains (from a Deposited or Requeued) with more starts than ``retries + 1``."""
    found = []
    retries, starts = 0, 0
    for event in history:
        if isinstance(event, (ev.Deposited, ev.Requeued)):
            retries, starts = event.work.retries, 0
        elif isinstance(event, ev.Started):
            starts += 1
            if starts == retries + 2:
                found.append(Anomaly(kind="attempts", work_id=work_id,
                                     detail=f"{starts} starts in one chain; retries {retries} allows {retries + 1}"))
    return found


def _difference(projected: Work | None, folded: Work | None) -> str:
    if projected is None or folded is None:
        return f"projected {'nothing' if projected is None else projected.status}, " \
               f"folded {'nothing' if folded is None else folded.status}"
    fields = [name for name in projected.__struct_fields__ if getattr(projected, name) != getattr(folded, name)]
    return "the projected row differs from the fold of its events in " + ", ".join(fields)
