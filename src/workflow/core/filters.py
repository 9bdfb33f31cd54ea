"""Which works: the filters of a search and of a filtered withdraw, declared once.

:class:`WorkFilter` is the one definition of a search's filters (``workflow ls``/``count``,
``client.results.query``/``count``, a bulk action's selection, the read model's question
for a filtered withdraw): its fields are the names, its types are the Work fields' own
(``Pipeline``, ``Status``, ``Site``, ``Priority``: the core's bounds), and it is what the
results service decodes from the network (:mod:`workflow.results.queries` adds only when
to answer). :meth:`WorkFilter.of` builds one from what a caller writes (one value or
several, times as text or datetimes) and checks each value as the Work field it filters
on, with the same message a Work gives. :class:`FilterValues` is that caller's side,
the keywords of every function that takes filters.

Every filter given must hold; within one, a list means *any of*, except ``tags``: works
with *all* of them (a search narrows). An empty value (None, ``[]``, ``""``) is no filter.

:class:`WithdrawFilter` is the old system's withdraw rule, a different one, kept so
users' habits carry over (its Buckets client sent a MongoDB query): every filter given
must hold, and within one a list means *any of*:

- ``tags``: the work carries **any** of these tags (``{"tags": {"$in": tags}}``);
- ``event``: the work names **any** of these telescope events (``{"event": {"$in": …}}``);
- ``user``: the work's ``user`` is exactly this;
- ``parent``: the work's ``config["parent"]`` is exactly this (``{"config.parent": …}``).

Pure: the read model finds a withdraw's candidates with the same rule
(:meth:`WithdrawFilter.queued`), and the claim checks it again on the work as the log has it
(:func:`workflow.core.claim.decide_filtered`), so a stale read model can never hand out a
work that does not match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, TypedDict, Unpack

import msgspec

from workflow.core.errors import ValidationError
from workflow.core.status import Status
from workflow.core.work import Pipeline, Priority, Site, Work, validate_field

#: The start of a work id (ids are sortable, so a prefix is a span of time too).
IdPrefix = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
#: A moment as a caller gives it: unix seconds, a datetime, or ISO-8601 text (naive means UTC).
Moment = float | str | datetime


class WorkFilter(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Which works: every filter given must hold (lists mean "any of", except ``tags``).

    Build it with :meth:`of` (checked, normalised); decoding (the results service) checks
    the same types. Encoded, it carries only the filters given, so an older service
    still answers the rest.
    """

    pipeline: list[Pipeline] | None = None
    status: list[Status] | None = None
    site: list[Site] | None = None
    user: str | None = None
    tags: list[str] | None = None  # works carrying all of these tags
    event: list[int] | None = None  # works naming any of these telescope events
    since: float | None = None  # created at or after (unix seconds)
    until: float | None = None  # created before (unix seconds)
    id_prefix: IdPrefix | None = None  # works whose id starts with this
    after_id: IdPrefix | None = None  # works whose id sorts after this (paging that never shifts)
    include_deleted: bool = False  # deleted works too (hidden unless asked, or ``status`` names them)
    any_tags: list[str] | None = None  # works carrying any of these tags (a filtered withdraw's rule)
    parent: str | None = None  # works whose config names this parent (``config["parent"]``)
    priority: list[Priority] | None = None  # works at any of these priorities
    precursor: IdPrefix | None = None  # works waiting on (or run after) this work: their ``precursors`` name it

    @classmethod
    def of(cls, **values: Unpack[FilterValues]) -> WorkFilter:
        """The filter of these keywords (see :class:`FilterValues`), each checked as the Work
        field it filters on, with the same message (ValidationError naming it).

        ``status="queued"`` and ``status=["queued"]`` are one filter; ``since``/``until``
        may be ISO text or datetimes. A site need not be one this host knows: a search
        reads what the log accepted."""
        unknown = sorted(values.keys() - set(cls.__struct_fields__))
        if unknown:
            raise ValidationError(
                unknown[0], f"no filter {', '.join(map(repr, unknown))}; filters are {', '.join(cls.__struct_fields__)}"
            )
        given = {name: checked(name, value) for name, value in values.items() if not _empty(value)}
        try:
            return msgspec.convert(given, type=cls)
        except msgspec.ValidationError as error:  # not expected: every value was checked above
            raise ValidationError("filter", str(error)) from None

    @classmethod
    def either(cls, where: Any, values: FilterValues | SelectionValues) -> WorkFilter:
        """``where`` if it is a filter, else the filter of the keywords ``values``: a caller
        gives one or the other (ValidationError if both, or ``where`` is something else)."""
        if where is None:
            return cls.of(**values)
        if not isinstance(where, WorkFilter):
            raise ValidationError(
                "filter", f"filters are keywords (pipeline=…, status=…) or a WorkFilter, not {where!r}"
            )
        if values:
            raise ValidationError(next(iter(values)), "give a WorkFilter or filter keywords, not both")
        return where

    def given(self) -> dict[str, Any]:
        """The filters given, by name, as the wire carries them."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    def __bool__(self) -> bool:
        return bool(self.given())


class SelectionValues(TypedDict, total=False):
    """What a caller writes for :class:`WorkFilter`'s fields (the same names): one value or
    several, times as unix seconds, datetimes or ISO text; :meth:`WorkFilter.of` reads
    them. These are the keywords of a bulk action (``client.cancel_many(pipeline="p",
    status="queued")``); :class:`FilterValues` adds ``site`` and ``priority``, which a
    re-queue's own keywords name (where to), so a bulk action selects by those through a
    WorkFilter. A test holds the names of both equal to the fields."""

    pipeline: str | Iterable[str] | None
    status: str | Iterable[str] | None
    user: str | None
    tags: str | Iterable[str] | None
    event: int | Iterable[int] | None
    since: Moment | None
    until: Moment | None
    id_prefix: str | None
    after_id: str | None
    include_deleted: bool
    any_tags: str | Iterable[str] | None
    parent: str | None
    precursor: str | None


class FilterValues(SelectionValues, total=False):
    """Every filter keyword: those of a selection, and ``site`` and ``priority``. The
    keywords of ``client.results.query``/``count`` and ``client.select``."""

    site: str | Iterable[str] | None
    priority: int | Iterable[int] | None


#: Filters on one Work field given as one value or several ("any of"): each value is
#: checked as that field.
_EACH_AS = {"pipeline": "pipeline", "status": "status", "site": "site", "priority": "priority"}
#: Filters whose list is checked as a Work field that is a list itself.
_LIST_AS = {"tags": "tags", "any_tags": "tags", "event": "event"}
_MOMENTS = ("since", "until")


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple)) and not value)


def many(value: Any) -> list[Any]:
    """One value or several as a list (None: none); a text is one value, not its letters."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def checked(name: str, value: Any) -> Any:
    """``value`` of filter ``name`` normalised (one or many: a list; a moment: unix
    seconds), and checked as its Work field, with its message (ValidationError)."""
    if name in _EACH_AS:
        values = many(value)
        for one in values:
            validate_field(_EACH_AS[name], one, known_site=False)
        return values
    if name in _LIST_AS:
        return validate_field(_LIST_AS[name], many(value))
    if name in _MOMENTS:
        return as_unix(value, name)
    if name == "user":
        return validate_field("user", value)
    if name == "parent":
        return check_parent(value)
    try:  # the filters that are no Work field: their own rule, in the same words
        return msgspec.convert(value, type=_field_types()[name])
    except msgspec.ValidationError:
        raise ValidationError(name, f"{_RULES[name]}; got {value!r}") from None


#: The rules of the filters that are no Work field, as a user reads them.
_RULES = {
    "id_prefix": "id_prefix is the start of a work id: 1–64 letters, digits, '_' and '-'",
    "after_id": "after_id is a work id: 1–64 letters, digits, '_' and '-'",
    "include_deleted": "include_deleted is true or false",
    "precursor": "precursor is a work id: 1–64 letters, digits, '_' and '-'",
}


@cache
def _field_types() -> dict[str, Any]:
    return {field.name: field.type for field in msgspec.structs.fields(WorkFilter)}


def check_parent(parent: Any) -> str:
    """A parent's name or id (a work's ``config["parent"]``), which is not a Work field."""
    if not isinstance(parent, str) or not parent:
        raise ValidationError("parent", f"expected a non-empty string (a parent's name or id), got {parent!r}")
    return parent


def as_unix(moment: float | str | datetime | None, field: str) -> float | None:
    """Unix seconds from a number, a datetime or an ISO-8601 text (naive means UTC): a
    moment as callers write it (a filter's ``since``/``until``, a deposit's ``at``)."""
    if moment is None or isinstance(moment, (int, float)):
        return moment
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(
                field, f"expected an ISO-8601 time like 2026-01-31T12:00:00Z, got {moment!r}"
            ) from None
    if not isinstance(moment, datetime):
        raise ValidationError(field, f"expected unix seconds, a datetime or ISO-8601 text, got {moment!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class WithdrawFilter:
    """What a filtered withdraw takes: works matching every filter given (empty: all).

    Not a :class:`WorkFilter`: its ``tags`` mean *any of* (a search's mean *all of*), and
    it is checked against a Work in memory (:meth:`matches`), not by the read model. Its
    values are read and checked as a search's are (:meth:`WorkFilter.of`), so a value a
    search refuses is refused here with the same message, and :meth:`queued` asks the
    read model for its candidates as the search of the same rule."""

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
        search = WorkFilter.of(any_tags=tags, event=event, user=user, parent=parent)
        if parent is not None and search.parent is None:  # "" is no search filter, but a bad parent here
            check_parent(parent)
        return cls(
            tuple(dict.fromkeys(search.any_tags or ())), tuple(dict.fromkeys(search.event or ())),
            search.user, search.parent,
        )

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

    def queued(self, pipelines: list[str], site: str | None = None, priority: int | None = None) -> WorkFilter:
        """The read model's question for this filter's candidates: works queued in these
        pipelines (at ``site`` and ``priority`` if given) that match, as a search."""
        return WorkFilter(
            pipeline=pipelines, status=["queued"], site=many(site) or None, priority=many(priority) or None,
            any_tags=list(self.tags) or None, event=list(self.event) or None, user=self.user, parent=self.parent,
        )

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
