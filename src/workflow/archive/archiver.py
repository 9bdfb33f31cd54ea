"""The worker's archiver: after the function, what its attempt returned goes to storage.

Two phases, so a failure leaves the attempt as it was and the retry finds every file:

1. *Check and store*: each returned path is resolved (symlinks followed, then checked:
   a path outside the work's ``path`` directory and the site's allowed roots is refused,
   whatever link led there), its method checked against the site's, and ``copy``/``move``
   files streamed into the storage under a key holding the attempt. Any error removes
   what this attempt had stored and raises ArchiveError: nothing is recorded as archived
   unless it is.
2. *Local effects*: only once everything is stored, ``move`` and ``delete`` remove the
   local files (and the POSIX permissions template runs).

Only the paths this attempt's function *returned* are archived, never paths written in the
work at deposit: the caller passes the outcome's lists.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from workflow.archive.storage import Place, Storage
from workflow.core.archiving import ArchiveSettings
from workflow.core.products import (
    ArchivedFile,
    ArchiveError,
    FileKind,
    check_allowed,
    methods_of,
    names_for,
    outside_message,
    within,
)
from workflow.core.work import Work

log = logging.getLogger("workflow.archive")


def resolve(path: str, base: str) -> str:
    """``path`` absolute (relative to ``base``) with every symlink resolved."""
    return os.path.realpath(os.path.join(base, os.path.expanduser(path)))


def allowed_roots(work: Work, settings: ArchiveSettings) -> list[str]:
    """The work's ``path`` directory and the site's roots, resolved."""
    return [resolve(work.path or ".", os.getcwd())] + [resolve(root, os.getcwd()) for root in settings.roots]


class Archiver:
    """Archives an attempt's returned files into ``storage`` under ``settings``."""

    def __init__(self, settings: ArchiveSettings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage

    async def archive(
        self, work: Work, attempt: int, products: list[str] | None, plots: list[str] | None,
    ) -> list[ArchivedFile]:
        """Archive every returned file; the records, in the order returned (products first).
        Raises ArchiveError (having removed what it stored) when any file cannot be."""
        if work.id is None:
            raise ArchiveError("the work was never deposited: nothing to archive it under")
        methods = methods_of(work.config)
        allowed = self.settings.allowed_methods()
        roots = allowed_roots(work, self.settings)
        base = os.getcwd() if work.path in (None, "", ".") else resolve(work.path, os.getcwd())
        records: list[ArchivedFile] = []
        try:
            for kind, paths in (("product", products or []), ("plot", plots or [])):
                method = methods[kind]  # type: ignore[index]
                if paths:
                    check_allowed(method, allowed, kind)  # type: ignore[arg-type]
                for path, name in zip(paths, names_for(paths), strict=True):
                    records.append(await self._one(work, attempt, kind, path, name, method, base, roots))  # type: ignore[arg-type]
        except BaseException:
            await self.discard(records)
            raise
        await self._local_effects(records, base)
        return records

    async def _one(
        self, work: Work, attempt: int, kind: FileKind, path: str, name: str, method: str, base: str,
        roots: list[str],
    ) -> ArchivedFile:
        if method == "bypass":  # recorded as returned: nothing read, nothing checked
            return ArchivedFile(kind=kind, name=name, path=path, method="bypass", uri=path)
        resolved = resolve(path, base)
        if not within(resolved, roots):
            raise ArchiveError(outside_message(path, resolved, roots))
        if not os.path.isfile(resolved):
            missing = "does not exist" if not os.path.exists(resolved) else "is not a regular file"
            raise ArchiveError(f"{kind} {path} {missing}")
        if method == "delete":
            return ArchivedFile(kind=kind, name=name, path=path, method="delete")
        place = Place(work_id=work.id or "", pipeline=work.pipeline, attempt=attempt, kind=kind, name=name,
                      created=work.creation or 0.0)
        stored = await self.storage.put(Path(resolved), place, self.settings.limit(self.storage.name))
        return ArchivedFile(
            kind=kind, name=name, path=path, method=method, uri=stored.uri, size=stored.size,  # type: ignore[arg-type]
            sha256=stored.sha256, storage=self.storage.name,
        )

    async def discard(self, records: list[ArchivedFile]) -> None:
        """Remove what was stored for ``records`` (a failed or refused attempt's uploads)."""
        for record in records:
            if record.uri is not None and record.storage is not None:
                try:
                    await self.storage.delete(record.uri)
                except Exception as error:  # reported: the audit lists what stays behind
                    log.warning("could not remove %s after a failed archive: %s", record.uri, error)

    async def _local_effects(self, records: list[ArchivedFile], base: str) -> None:
        """``move`` and ``delete`` remove the local files, once everything is stored."""
        for record in records:
            if record.method in ("move", "delete"):
                target = resolve(record.path, base)
                try:
                    await asyncio.to_thread(os.remove, target)
                except FileNotFoundError:
                    pass
                except OSError as error:
                    log.warning("archived %s but could not remove it: %s", record.path, error)
