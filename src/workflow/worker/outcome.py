"""What one attempt returned, as the outcome the worker records.

A function returns a results dict, or a tuple ``(results, products, plots)``; any other
value ``v`` is recorded as ``{"value": v}``. :func:`normalize` turns a return value into
those three (results made plain JSON: paths, sets and numpy values converted, anything else
a ResultsError); :class:`Outcome` is how the attempt ended. Shared by the plain functions
(:mod:`workflow.worker.runner`) and the click commands (:mod:`workflow.worker.clicks`).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Literal

import msgspec

from workflow.core.errors import ResultsError

#: Error texts and tracebacks are capped so that the event recording them always fits.
MAX_ERROR_CHARS = 20_000


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one attempt ended, as the worker records it.

    ``status``: ``succeeded``; ``failed`` (raised, exited non-zero, or died); or
    ``unrunnable`` (nothing could be started: unknown function, missing executable).
    """

    status: Literal["succeeded", "failed", "unrunnable"]
    results: dict[str, Any] | None = None
    products: list[str] | None = None
    plots: list[str] | None = None
    error: str | None = None
    traceback: str | None = None


def _to_json(value: Any) -> Any:
    """msgspec ``enc_hook``: the few non-JSON types telescope code returns all the time."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return value.tolist()
    raise ResultsError(f"results must be JSON: cannot store a {type(value).__module__}.{type(value).__qualname__}")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON builtins (raises :class:`ResultsError` if it is not JSON)."""
    try:
        return msgspec.json.decode(msgspec.json.encode(value, enc_hook=_to_json))
    except (TypeError, msgspec.EncodeError, OverflowError) as error:
        raise ResultsError(str(error)) from None


def paths(items: list[Any]) -> list[str]:
    return [str(item) for item in items]


def normalize(value: Any) -> tuple[dict[str, Any] | None, list[str] | None, list[str] | None]:
    """(results, products, plots) from a function's return value (see the module's rule)."""
    if value is None:
        return None, None, None
    if isinstance(value, dict):
        return jsonable(value), None, None
    if isinstance(value, tuple):
        results: dict[str, Any] | None = None
        lists: list[list[str]] = []
        for item in value:
            if isinstance(item, dict) and results is None:
                results = jsonable(item)
            elif isinstance(item, list):
                lists.append(paths(item))
        return results, (lists[0] if lists else None), (lists[1] if len(lists) > 1 else None)
    return {"value": jsonable(value)}, None, None


def clip(text: str | None, limit: int = MAX_ERROR_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters, keeping the end (where a traceback says most)."""
    if text is None or len(text) <= limit:
        return text
    return f"[{len(text) - limit} characters cut]\n" + text[-limit:]
