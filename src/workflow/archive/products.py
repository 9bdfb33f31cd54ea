"""Fetching products from anywhere: ``client.products.list/download/open``.

What a work's products are is read from the log (the last outcome event's ``archived``
records), not from the read model, so it needs only the log and works while the projector
catches up. Bytes come from the storage each URI names: the object store over this
client's own NATS connection (no other credential), a POSIX mount if present on this
machine, S3 with the environment's credentials; whatever is missing is said plainly.
Every download is verified against the sha256 the log recorded, and written to a
temporary name first, so a file that fails verification never appears under its name.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from workflow.archive.objectstore import ObjectStoreStorage, parse_uri
from workflow.archive.posix import path_of, read_file
from workflow.archive.s3 import read_s3
from workflow.archive.s3 import remove as remove_s3
from workflow.core import events as ev
from workflow.core.archiving import DEFAULT_BUCKET
from workflow.core.errors import NotFoundError, WorkflowError
from workflow.core.products import ArchivedFile, ArchiveError, ChecksumMismatchError, key_prefix, names_for, scheme
from workflow.log.client import Client


def recorded(history: list[ev.AnyEvent]) -> list[ArchivedFile]:
    """The files the work's last outcome recorded: its ``archived`` records, or, for an
    outcome written before archiving existed, its bare paths (as ``bypass``). A file
    removed since (``workflow delete --products``) has no URI any more."""
    removed = {uri for event in history if isinstance(event, ev.Deleted) for uri in event.products_removed or []}
    return [msgspec.structs.replace(item, uri=None) if item.uri in removed else item for item in _last(history)]


def every_archived(history: list[ev.AnyEvent]) -> list[ArchivedFile]:
    """Every file any recorded outcome of the work archived into a storage (all attempts)."""
    return [item for event in history if isinstance(event, (ev.Succeeded, ev.Failed))
            for item in event.archived or [] if item.uri is not None and item.storage is not None]


def _last(history: list[ev.AnyEvent]) -> list[ArchivedFile]:
    for event in reversed(history):
        if isinstance(event, (ev.Succeeded, ev.Failed)) and (event.archived or event.products or event.plots):
            if event.archived is not None:
                return list(event.archived)
            old: list[ArchivedFile] = []
            for kind, paths in (("product", event.products or []), ("plot", event.plots or [])):
                old += [ArchivedFile(kind=kind, name=name, path=path, method="bypass", uri=path)  # type: ignore[arg-type]
                        for path, name in zip(paths, names_for(paths), strict=True)]
            return old
    return []


class Products:
    """A work's archived products and plots, through a connected client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def list(self, work_id: str) -> list[ArchivedFile]:
        """The work's products and plots as its last outcome recorded them (empty if none)."""
        return recorded(await self._client.history(work_id))

    async def remove(self, work_id: str) -> builtins.list[str]:
        """Remove every archived file of the work (each attempt's recorded files, and
        whatever else the object store holds under the work's key prefix: a failed or
        zombie attempt's leftovers); the URIs removed. Bypassed paths are not ours and
        are left alone."""
        history = await self._client.history(work_id)
        uris = {item.uri for item in every_archived(history) if item.uri is not None}
        store = ObjectStoreStorage(self._client.nc, DEFAULT_BUCKET)
        with contextlib.suppress(ArchiveError):  # no object store on this server: nothing there
            uris.update(await store.keys(key_prefix(work_id)))
        removed = []
        for uri in sorted(uris):
            kind = scheme(uri)
            if kind == "obj":
                bucket, _ = parse_uri(uri)
                await ObjectStoreStorage(self._client.nc, bucket).delete(uri)
            elif kind == "file":
                await asyncio.to_thread(path_of(uri).unlink, missing_ok=True)
            elif kind == "s3":
                await remove_s3(uri)
            else:
                raise WorkflowError(f"cannot remove {uri}: no storage for it here")
            removed.append(uri)
        return removed

    def open(self, uri: str) -> AsyncIterator[bytes]:
        """The bytes at ``uri``, chunk by chunk (``async for chunk in client.products.open(uri)``)."""
        kind = scheme(uri)
        if kind == "obj":
            bucket, _ = parse_uri(uri)
            return ObjectStoreStorage(self._client.nc, bucket).read(uri)
        if kind in ("file", "path"):
            return read_file(uri)
        if kind == "s3":
            return read_s3(uri)
        raise WorkflowError(f"no storage reads {uri!r} (known: obj://, file://, s3://, a plain path)")

    async def download(
        self, work_id: str, dest: str | Path = ".", names: builtins.list[str] | None = None,
    ) -> builtins.list[Path]:
        """Stream the work's files (all, or those ``names``) into the directory ``dest``,
        each verified against its recorded sha256; the paths written. A file deleted at
        archiving (no URI) or a name the work does not have is an error naming it."""
        files = await self.list(work_id)
        if not files:
            raise NotFoundError(f"work {work_id} recorded no products or plots")
        chosen = files if not names else [f for f in files if f.name in names]
        unknown = sorted(set(names or []) - {f.name for f in files})
        if unknown:
            raise NotFoundError(
                f"work {work_id} has no file named {', '.join(unknown)} (it has: {', '.join(f.name for f in files)})"
            )
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        return [await self._fetch(item, folder) for item in chosen]

    async def _fetch(self, item: ArchivedFile, folder: Path) -> Path:
        if item.uri is None:
            raise WorkflowError(
                f"{item.name} was deleted when archived (method delete) or removed since "
                "(workflow delete --products): there is nothing to fetch"
            )
        target = folder / item.name
        partial = folder / f".{item.name}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(partial, "wb") as out:
                async for chunk in self.open(item.uri):
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(out.write, chunk)
            if item.sha256 is not None and digest.hexdigest() != item.sha256:
                raise ChecksumMismatchError(
                    f"{item.name} ({item.uri}): sha256 {digest.hexdigest()} ({size:,} bytes) differs from the "
                    f"recorded {item.sha256} ({item.size:,} bytes): the stored copy was altered or damaged"
                    if item.size is not None else f"{item.name}: sha256 differs from the recorded one"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target
