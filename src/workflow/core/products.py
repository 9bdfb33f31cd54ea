"""Products and plots: the pure rules of archiving what an attempt's function returned.

A function returns ``(results, products, plots)``: products are its output files, plots
its pictures. After the function (success and failure alike) the worker archives each
one with the method the work's ``config["archive"]`` names for its kind (``bypass``,
``copy``, ``move`` or ``delete``; default ``copy``) into a storage, and the outcome event
records an :class:`ArchivedFile` per file: name, original path, archived URI, size and
sha256. What lives here is what needs no I/O: the record, the methods and their rules,
the object keys and directory layout (which include the attempt, so a zombie attempt's
late upload can never replace the recorded one), the containment rule for paths, and
the URI forms. The storages themselves (I/O) are in :mod:`workflow.archive`.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import msgspec

from workflow.core.errors import ValidationError, WorkflowError

#: What becomes of a returned file: ``bypass`` records its path as it is (nothing is read
#: or uploaded); ``copy`` archives it and keeps the local file; ``move`` archives it and
#: removes the local file; ``delete`` removes the local file and records no URI.
ArchiveMethod = Literal["bypass", "copy", "move", "delete"]
METHODS: tuple[str, ...] = get_args(ArchiveMethod)
DEFAULT_METHOD: ArchiveMethod = "copy"

#: The two kinds of returned files (``config["archive"]`` has one method per kind).
FileKind = Literal["product", "plot"]


class ArchiveError(WorkflowError):
    """Raised when a returned file cannot be archived (storage full or away, file missing,
    outside the allowed roots, over the storage's size limit, method not allowed). The
    attempt fails with reason ``archive`` and this message."""


class ChecksumMismatchError(WorkflowError):
    """Raised when a fetched product's bytes do not have the sha256 the log recorded."""


class ArchivedFile(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One returned file as the outcome event records it.

    ``uri`` is where it can be fetched from (``obj://``, ``file://``, ``s3://``); for
    ``bypass`` the original path, for ``delete`` None. ``size`` and ``sha256`` (hex) are
    those of the bytes archived (None when nothing was read).
    """

    kind: FileKind
    name: str
    path: str
    method: ArchiveMethod
    uri: str | None = None
    size: int | None = None
    sha256: str | None = None
    storage: str | None = None


def methods_of(config: dict[str, Any] | None) -> dict[FileKind, ArchiveMethod]:
    """The method for each kind named by a work's ``config["archive"]`` (``{"products":
    "move", "plots": "copy"}``); missing ones are the default. A bad value is a
    ValidationError naming the field, never a guess."""
    archive = (config or {}).get("archive")
    if archive is None:
        archive = {}
    if not isinstance(archive, dict):
        raise ValidationError("config.archive", f"must be a mapping like {{'products': 'copy'}}, got {archive!r}")
    chosen: dict[FileKind, ArchiveMethod] = {}
    for kind, key in (("product", "products"), ("plot", "plots")):
        value = archive.get(key, DEFAULT_METHOD)
        if value not in METHODS:
            raise ValidationError(f"config.archive.{key}", f"must be one of {', '.join(METHODS)}, got {value!r}")
        chosen[kind] = value  # type: ignore[index]
    return chosen


def check_allowed(method: ArchiveMethod, allowed: frozenset[str] | None, kind: FileKind) -> None:
    """Refuse a method the site does not allow (``allowed`` None: every method)."""
    if allowed is not None and method not in allowed:
        raise ArchiveError(
            f"archive method {method!r} for {kind}s is not allowed at this site "
            f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
        )


def names_for(paths: list[str]) -> list[str]:
    """A unique name per path: its file name, with ``-2``, ``-3``… before the suffix when
    two files share one (``a/x.png`` and ``b/x.png`` become ``x.png`` and ``x-2.png``)."""
    seen: set[str] = set()
    names = []
    for path in paths:
        base = os.path.basename(path.rstrip("/")) or "file"
        stem, dot, suffix = base.partition(".")
        name, n = base, 1
        while name in seen:
            n += 1
            name = f"{stem}-{n}{dot}{suffix}"
        seen.add(name)
        names.append(name)
    return names


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def safe(token: str) -> str:
    """``token`` with anything but letters, digits and ``._=-`` replaced (an object key
    or directory name never holds a separator or a wildcard it did not mean)."""
    return _UNSAFE.sub("_", token) or "_"


def object_key(work_id: str, attempt: int, kind: FileKind, name: str) -> str:
    """The key of a file in a key-value storage (object store, S3):
    ``<work id>/<attempt>/<kind>s/<name>``. The attempt keeps attempts apart."""
    return f"{safe(work_id)}/{attempt}/{kind}s/{safe(name)}"


def key_prefix(work_id: str) -> str:
    """The prefix under which every attempt of a work stores its files."""
    return f"{safe(work_id)}/"


def posix_relative(work_id: str, pipeline: str, attempt: int, kind: FileKind, name: str, when: float) -> str:
    """Where a file goes under a POSIX mount: ``<YYYYMMDD>/<pipeline>/<id>/<attempt>/<kind>s/<name>``
    (the old system's ``<mount>/<YYYYMMDD>/<pipeline>/<id>/`` plus the attempt), the day
    being the work's creation day in UTC, so every attempt of a work lands in one directory."""
    day = datetime.fromtimestamp(when, tz=UTC).strftime("%Y%m%d")
    return f"{day}/{safe(pipeline)}/{safe(work_id)}/{attempt}/{kind}s/{safe(name)}"


def within(path: str, roots: list[str]) -> bool:
    """True when the (already resolved, absolute) ``path`` is one of ``roots`` or under one."""
    for root in roots:
        root = root.rstrip("/") or "/"
        if path == root or path.startswith(root if root == "/" else root + "/"):
            return True
    return False


def outside_message(path: str, resolved: str, roots: list[str]) -> str:
    """The refusal of a path outside the allowed roots (symlinks resolved first)."""
    shown = f"{path} (resolves to {resolved})" if os.path.normpath(path) != resolved else path
    return (
        f"{shown} is outside the work's directory and the site's allowed roots ({', '.join(roots)}); "
        "refused: a function may only archive files it wrote under them"
    )


def over_limit_message(name: str, size: int, limit: int, storage: str) -> str:
    """The refusal of a file larger than a storage takes."""
    return (
        f"{name} is {size:,} bytes, over the {storage} storage's limit of {limit:,} bytes per file "
        f"(archive.limits.{storage} in the workspace); archive it to a storage with room for it "
        "(a POSIX mount or S3), or return it with method bypass"
    )


def uris(archived: list[ArchivedFile], kind: FileKind) -> list[str] | None:
    """The work's ``products``/``plots`` after archiving: the URIs of that kind (a deleted
    file has none); None when the function returned none of that kind."""
    of_kind = [item for item in archived if item.kind == kind]
    if not of_kind:
        return None
    return [item.uri for item in of_kind if item.uri is not None]


def scheme(uri: str) -> str:
    """The storage a URI names: ``obj``, ``file``, ``s3``, or ``path`` for a bare path (bypass)."""
    head, sep, _ = uri.partition("://")
    return head if sep else "path"
