"""A POSIX mount as a storage: ``<mount>/<YYYYMMDD>/<pipeline>/<id>/<attempt>/<kind>s/<name>``.

The old system's layout (plus the attempt, so a zombie attempt never overwrites the
recorded file). A copy streams in chunks, hashing as it goes, into a temporary name
that is renamed once complete: a file under its final name is always whole. After each
file the site's permissions command template (``setfacl -m g:{group}:r {path}``) runs,
and a failure of it fails the archive like any other. URIs are ``file://<absolute path>``;
a reader on a machine without the mount is told so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

from workflow.archive.storage import CHUNK, Place, Stored, check_size
from workflow.core.errors import NotFoundError, WorkflowError
from workflow.core.products import ArchiveError, over_limit_message, posix_relative

SCHEME = "file://"


def path_of(uri: str) -> Path:
    return Path(uri[len(SCHEME):] if uri.startswith(SCHEME) else uri)


class PosixStorage:
    """Products under a mounted directory (shared by the sites that mount it)."""

    name = "posix"

    def __init__(self, mount: str, permissions: str | None = None, fields: dict[str, str] | None = None) -> None:
        self.mount = Path(mount)
        self.permissions = permissions
        self.fields = fields or {}

    def _check_mount(self) -> None:
        if not self.mount.is_dir():
            raise ArchiveError(f"the archive mount {self.mount} is not present on this machine (not a directory)")

    async def put(self, source: Path, place: Place, limit: int | None) -> Stored:
        self._check_mount()
        check_size(source, place.name, limit, self.name)
        target = self.mount / posix_relative(place.work_id, place.pipeline, place.attempt, place.kind, place.name,
                                             place.created)
        partial = target.with_name(f".{target.name}.part")
        try:
            size, sha256 = await asyncio.to_thread(self._copy, source, partial, place.name, limit)
            os.replace(partial, target)
        except OSError as error:
            raise ArchiveError(f"cannot archive {place.name} to {target}: {error.strerror or error}") from None
        finally:
            partial.unlink(missing_ok=True)
        await self._apply_permissions(target)
        return Stored(uri=f"{SCHEME}{target}", size=size, sha256=sha256)

    def _copy(self, source: Path, partial: Path, name: str, limit: int | None) -> tuple[int, str]:
        """Copy in chunks, each chunk hashed in a second thread while it is written (both
        release the GIL): the copy runs at the slower of the disk and sha256, not their sum."""
        partial.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        if source.stat().st_size <= CHUNK:  # one chunk: nothing to overlap, no thread to start
            with open(source, "rb") as src, open(partial, "wb") as out:
                chunk = src.read(CHUNK + 1)
                if limit is not None and len(chunk) > limit:
                    raise ArchiveError(over_limit_message(name, len(chunk), limit, self.name))
                if len(chunk) <= CHUNK:
                    digest.update(chunk)
                    out.write(chunk)
                    return len(chunk), digest.hexdigest()
            # it grew past one chunk since: copy it the long way
        with (open(source, "rb") as src, open(partial, "wb") as out,
              concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="workflow-sha256") as hasher):
            while chunk := src.read(CHUNK):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise ArchiveError(over_limit_message(name, size, limit, self.name))
                hashed = hasher.submit(digest.update, chunk)
                out.write(chunk)
                hashed.result()  # one chunk in flight: memory stays at two chunks
        return size, digest.hexdigest()

    async def _apply_permissions(self, target: Path) -> None:
        if not self.permissions:
            return
        try:
            argv = [part.format(path=str(target), **self.fields) for part in shlex.split(self.permissions)]
        except (KeyError, ValueError) as error:
            raise ArchiveError(f"the permissions template {self.permissions!r} cannot be filled: {error}") from None
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise ArchiveError(
                f"the permissions command {shlex.join(argv)} exited with {process.returncode}: "
                f"{stderr.decode(errors='replace').strip()[-500:]}"
            )

    def read(self, uri: str) -> AsyncIterator[bytes]:
        return read_file(uri)

    async def delete(self, uri: str) -> None:
        path_of(uri).unlink(missing_ok=True)

    async def keys(self, prefix: str = "") -> list[str]:
        self._check_mount()
        found = []
        for root, _, files in os.walk(self.mount):
            for name in files:
                if not name.endswith(".part"):
                    found.append(f"{SCHEME}{os.path.join(root, name)}")
        return sorted(uri for uri in found if path_of(uri).relative_to(self.mount).as_posix().startswith(prefix))


async def read_file(uri: str) -> AsyncIterator[bytes]:
    """The bytes of a ``file://`` URI or a plain path, chunk by chunk; a missing file or
    mount is said plainly (the mount may not exist on this machine)."""
    path = path_of(uri)
    if not path.exists():
        if not path.parent.exists():
            raise NotFoundError(
                f"{path} is not reachable from this machine: its directory does not exist "
                "(the archive mount is not present here, or the file was a worker's local path)"
            )
        raise NotFoundError(f"{path} does not exist (deleted?)")
    try:
        with open(path, "rb") as file:
            while chunk := await asyncio.to_thread(file.read, CHUNK):
                yield chunk
    except PermissionError:
        raise WorkflowError(f"{path}: permission denied on this machine") from None
