"""Withdraw filters: which works a filtered withdraw (``workflow run --tag T``) may take.

The old system's rule, kept so users' habits carry over (its Buckets client sent a MongoDB
query): every filter given must hold, and within one filter a list means *any of*:

- ``tags``: the work carries **any** of these tags (``{"tags": {"$in": tags}}``);
- ``event``: the work names **any** of these telescope events (``{"event": {"$in": …}}``);
- ``user``: the work's ``user`` is exactly this;
- ``parent``: the work's ``config["parent"]`` is exactly this (``{"config.parent": …}``).

(``workflow ls --tag`` reads the other way, *all* of them: it is a search, not a withdraw.)

Pure: the read model finds candidates with the same rule, and the claim checks it again on
the work as the log has it (:func:`workflow.core.claim.decide_filtered`), so a stale read
model can never hand out a work that does not match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from workflow.core.errors import ValidationError
from workflow.core.work import Work, validate_field


@dataclass(frozen=True)
class WithdrawFilter:
    """What a filtered withdraw takes: works matching every filter given (empty: all)."""

    tags: tuple[str, ...] = ()
    event: tuple[int, ...] = ()
    user: str | None = None
    parent: str | None = None

    @classmethod
    def of(
        cls,
        tags: str | Iterable[str] | None = None,
        event: int | Iterable[int] | None = None,
        user: str | None = None,
        parent: str | None = None,
    ) -> WithdrawFilter:
        """A filter from the values a caller gives (one value or several), each checked
        as the Work field it filters on, with the same message."""
        tag_list = [tags] if isinstance(tags, str) else list(tags or [])
        event_list = [event] if isinstance(event, int) else list(event or [])
        if tag_list:
            validate_field("tags", tag_list)
        if event_list:
            validate_field("event", event_list)
        if user is not None:
            validate_field("user", user)
        if parent is not None and (not isinstance(parent, str) or not parent):
            raise ValidationError("parent", f"expected a non-empty string (a parent's name or id), got {parent!r}")
        return cls(tuple(dict.fromkeys(tag_list)), tuple(dict.fromkeys(event_list)), user, parent)

    def __bool__(self) -> bool:
        return bool(self.tags or self.event or self.user is not None or self.parent is not None)

    def matches(self, work: Work) -> bool:
        """True if ``work`` is one this filter takes."""
        if self.tags and not set(self.tags) & set(work.tags or ()):
            return False
        if self.event and not set(self.event) & set(work.event or ()):
            return False
        if self.user is not None and work.user != self.user:
            return False
        return self.parent is None or parent_of(work) == self.parent

    def describe(self) -> str:
        """One line for logs: ``tag a|b, event 1|2, user ann, parent p``."""
        parts = []
        if self.tags:
            parts.append("tag " + "|".join(self.tags))
        if self.event:
            parts.append("event " + "|".join(map(str, self.event)))
        if self.user is not None:
            parts.append(f"user {self.user}")
        if self.parent is not None:
            parts.append(f"parent {self.parent}")
        return ", ".join(parts) or "no filter"


def parent_of(work: Work) -> Any:
    """A work's parent, as the old system kept it: ``config["parent"]`` (None if unset)."""
    return (work.config or {}).get("parent")
