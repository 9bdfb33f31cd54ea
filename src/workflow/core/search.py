"""The search box's small query language, parsed into the results service's filters.

``status:failure user:ann tag:x event:123 site:chime id:01J pipeline:alpha run:01J… after:ID``:
every term must hold (``run:ID``: the works of a configuration's run; ``after:ID``: the works
whose precursors name that work, those waiting on it or run after it); a comma gives
alternatives (``status:failure,cancelled``), except for tags: a work must carry every tag
named (``tag:a,b`` or ``tag:a tag:b``). A bare word is a status if it names one, a work id
prefix if it is written in the id alphabet (upper-case Crockford base32, as ULIDs are), else
a pipeline.
Pure: no textual, no I/O, so the syntax is tested on its own, and shared by both front ends
(the TUI's search box and the web UI's `/works?q=…`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from workflow.core.errors import ValidationError
from workflow.core.filters import FilterValues
from workflow.core.status import LOGGED

#: The keys a term may have, with their short forms.
KEYS = {
    "pipeline": "pipeline", "p": "pipeline",
    "status": "status", "s": "status",
    "site": "site",
    "user": "user", "u": "user",
    "tag": "tags", "tags": "tags", "t": "tags",
    "event": "event", "ev": "event",
    "id": "id_prefix",
    "run": "parent",  # a configuration run's id: its works (``config.parent``)
    "after": "precursor",
}
#: The keys that take one value, as the error names them.
ONE_AT_A_TIME = {"user": "user", "id_prefix": "id prefix", "parent": "run", "precursor": "after:ID"}
_ID_ALPHABET = re.compile(r"^[0-9A-HJKMNP-TV-Z]+$")

#: One line of examples, every key: the search box's placeholder.
SEARCH_HINT = "pipeline:alpha status:failure user:ann tag:x event:123 site:chime id:01J after:ID"
SYNTAX_HELP = (
    "pipeline:alpha  status:failure,cancelled  user:ann  tag:x  event:123  site:chime  id:01J\n"
    "run:ID (the works of a configuration's run)  after:ID (the works waiting on that work)\n"
    "(every term must hold; a comma gives alternatives; a bare word is a status, an id\n"
    "prefix in capitals, or a pipeline)"
)


@dataclass(frozen=True)
class Search:
    """Filters for ``client.results.query``/``count``: empty lists mean "any"."""

    pipeline: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    site: tuple[str, ...] = ()
    user: str | None = None
    tags: tuple[str, ...] = ()
    event: tuple[int, ...] = ()
    id_prefix: str | None = None
    parent: str | None = None  # a configuration run's id (``run:ID``)
    precursor: str | None = None  # works whose precursors name this work (``after:ID``)
    text: str = field(default="", compare=False)

    def filters(self) -> FilterValues:
        """Keyword arguments of ``Results.query`` and ``Results.count`` (the core's filter
        keywords: :class:`~workflow.core.filters.FilterValues`)."""
        return {
            "pipeline": list(self.pipeline) or None, "status": list(self.status) or None,
            "site": list(self.site) or None, "user": self.user, "tags": list(self.tags) or None,
            "event": list(self.event) or None, "id_prefix": self.id_prefix, "precursor": self.precursor,
            **({"parent": self.parent} if self.parent is not None else {}),  # (only where a run is asked for)
        }

    def describe(self) -> str:
        return self.text.strip() or "all works"


def parse(text: str) -> Search:
    """The Search a line of text asks for (ValidationError naming the bad term)."""
    values: dict[str, Any] = {}
    for term in text.split():
        key, sep, value = term.partition(":")
        if not sep:
            key, value = _bare(term), term
        elif key.lower() not in KEYS:
            raise ValidationError("search", f"unknown key {key!r} in {term!r}; keys: {', '.join(sorted(set(KEYS)))}")
        else:
            key = KEYS[key.lower()]
        if not value:
            raise ValidationError("search", f"{term!r} has no value")
        _add(values, key, value)
    return Search(**values, text=text)


def _bare(word: str) -> str:
    if word.lower() in LOGGED:
        return "status"
    return "id_prefix" if _ID_ALPHABET.match(word) else "pipeline"


def _add(values: dict[str, Any], key: str, value: str) -> None:
    if key in ONE_AT_A_TIME:
        if key in values:
            raise ValidationError("search", f"one {ONE_AT_A_TIME[key]} at a time")
        values[key] = value.upper() if key in ("id_prefix", "parent") else value
        return
    items = [v for v in value.split(",") if v]
    if key == "status":
        items = [v.lower() for v in items]
        unknown = [v for v in items if v not in LOGGED]
        if unknown:
            raise ValidationError("search", f"no status {', '.join(unknown)}; statuses: {', '.join(LOGGED)}")
    if key == "event":
        try:
            values[key] = (*values.get(key, ()), *(int(v) for v in items))
        except ValueError:
            raise ValidationError("search", f"event numbers are integers, not {value!r}") from None
        return
    values[key] = (*values.get(key, ()), *items)
