"""The retry rule and the backoff: how many attempts a work gets, which failures use
them, and how long it waits.

One source for all three, so the worker that fails an attempt, the worker that gives one
back, and the worker that finds a lost one all agree on whether the work runs again.

Which failures retry (while ``retries`` remain):

- ``error`` (the function raised, the command exited non-zero), ``timeout`` (it ran past
  the work's ``timeout``) and ``reported`` (``work.update()`` with status failure): the
  work's own failures, retried by default as the old system did. A work narrows them
  with ``config["retry_on"]``, the list of these reasons that retry: ``["error"]`` keeps
  a work that hung once from hanging again; ``[]`` retries none of them.
- ``lost``, ``interrupted`` and ``archive`` (its worker vanished, was stopped and gave it
  back, or could not archive its products: storage full or away): not the work's doing,
  so always retried, whatever ``retry_on`` says.
- ``too-large`` and ``unrunnable``: never, another attempt would fail alike.
"""

from __future__ import annotations

from typing import Any

from workflow.core.errors import ValidationError
from workflow.core.settings import MAX_RETRY_DELAY, retry_backoff_seconds

#: The failure reasons a work may list in ``config["retry_on"]``, and its default.
RETRY_ON_REASONS: tuple[str, ...] = ("error", "timeout", "reported")
#: Failures no retry can mend.
NEVER_RETRIED: frozenset[str] = frozenset({"too-large", "unrunnable"})


def retries_after(reason: str, config: dict[str, Any] | None) -> bool:
    """True if a failure for ``reason`` may use one of the work's retries (``config`` is the
    work's: see the module docstring). A ``retry_on`` that is not a list of known reasons
    (written around the checks) is read as absent: reading never fails on the log."""
    if reason in NEVER_RETRIED:
        return False
    if reason not in RETRY_ON_REASONS:
        return True
    retry_on = (config or {}).get("retry_on")
    if not isinstance(retry_on, list) or not _is_reason_list(retry_on):
        return True
    return reason in retry_on


def check_retry_on(config: dict[str, Any] | None) -> None:
    """Refuse (ValidationError) a ``config["retry_on"]`` that is not a list of
    :data:`RETRY_ON_REASONS`; a work written with one must mean what it says."""
    if config is None or "retry_on" not in config or _is_reason_list(config["retry_on"]):
        return
    raise ValidationError(
        "config",
        f"config['retry_on'] is the list of failure reasons that retry, each one of "
        f"{', '.join(RETRY_ON_REASONS)} (lost and interrupted attempts always retry); "
        f"got {config['retry_on']!r}",
    )


def _is_reason_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item in RETRY_ON_REASONS for item in value)


def may_retry(attempts_in_chain: int, retries: int) -> bool:
    """True if a work that has made ``attempts_in_chain`` attempts since it was last
    (re)queued may run again: ``retries`` bounds the retries, so a chain holds at most
    ``retries + 1`` attempts. Counting per chain (not per work) lets a work retried by
    hand (``requeue``) get its full retries again."""
    return attempts_in_chain < retries + 1


def retry_delay(attempts_in_chain: int, base: float | None = None) -> float:
    """Exponential backoff: base, 2×base, 4×base … capped at ``MAX_RETRY_DELAY``.

    ``base`` defaults to ``WORKFLOW_RETRY_BACKOFF`` (read now, so tests can shorten it).
    Failing work waits longer each time, so a broken dependency is not hammered.
    """
    first = retry_backoff_seconds() if base is None else base
    return min(first * 2.0 ** max(attempts_in_chain - 1, 0), MAX_RETRY_DELAY)
