"""The retry rule and the backoff: how many attempts a work gets, and how long it waits.

One source for both, so the worker that fails an attempt, the worker that gives one back,
and the worker that finds a lost one all agree on whether the work runs again.
"""

from __future__ import annotations

from workflow.core.settings import MAX_RETRY_DELAY, retry_backoff_seconds


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
