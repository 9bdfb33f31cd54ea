"""The storage interface: put a file (streamed, checksummed), read it back, delete it.

Every storage (the JetStream object store, a POSIX mount, S3) streams in chunks, so the
worker's memory stays flat whatever the file's size, and computes the sha256 of the bytes
it stored while it streams them: the checksum the log records is that of what was stored,
not of a file that may have changed since.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from workflow.core.products import ArchiveError, FileKind, over_limit_message

#: Bytes read from a file (or a storage) at a time.
CHUNK = 4 << 20


@dataclass(frozen=True)
class Place:
    """What a storage needs to place a file: the work, its attempt, the file's kind and name."""

    work_id: str
    pipeline: str
    attempt: int
    kind: FileKind
    name: str
    created: float


@dataclass(frozen=True)
class Stored:
    """Where a storage put a file, and what it put: size and hex sha256 of the stored bytes."""

    uri: str
    size: int
    sha256: str


class Storage(Protocol):
    """Where products go. ``name`` is the storage's name in settings and messages."""

    name: str

    async def put(self, source: Path, place: Place, limit: int | None) -> Stored:
        """Store ``source`` (streamed) at ``place``; raise ArchiveError, leaving nothing
        behind, when it cannot (over ``limit`` bytes, full, away)."""
        ...

    def read(self, uri: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``uri``, chunk by chunk."""
        ...

    async def delete(self, uri: str) -> None:
        """Remove ``uri`` (no error if it is already gone)."""
        ...

    async def keys(self, prefix: str = "") -> list[str]:
        """The URIs this storage holds (under ``prefix``), for the audit."""
        ...


class HashingReader:
    """A binary file read through: counts (and with ``hashing``, hashes) every byte read,
    and refuses (raises ArchiveError) to read past ``limit``, so a file that grows while it
    is uploaded is never stored partly over the limit. A storage whose client hashes what it
    sends already (nats-py's object store) passes ``hashing=False``: sha256 once, not twice."""

    def __init__(self, file: IO[bytes], name: str, limit: int | None, storage: str, hashing: bool = True) -> None:
        self._file = file
        self._name = name
        self._limit = limit
        self._storage = storage
        self.size = 0
        self._hash = hashlib.sha256() if hashing else None

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._file.readinto(buffer)  # type: ignore[attr-defined]
        if not n:
            return 0
        self.size += n
        if self._limit is not None and self.size > self._limit:
            raise ArchiveError(over_limit_message(self._name, self.size, self._limit, self._storage))
        if self._hash is not None:
            self._hash.update(memoryview(buffer)[:n])
        return int(n)

    def read(self, size: int = CHUNK) -> bytes:
        buffer = bytearray(size)
        n = self.readinto(buffer)
        return bytes(buffer[:n])

    @property
    def sha256(self) -> str:
        if self._hash is None:
            raise ValueError("this reader does not hash (hashing=False)")
        return self._hash.hexdigest()


def check_size(source: Path, name: str, limit: int | None, storage: str) -> int:
    """The file's size, refused before any byte is sent when it is over ``limit``."""
    try:
        size = source.stat().st_size
    except OSError as error:
        raise ArchiveError(f"cannot read {source}: {error.strerror or error}") from None
    if limit is not None and size > limit:
        raise ArchiveError(over_limit_message(name, size, limit, storage))
    return size


async def sha256_of(chunks: AsyncIterator[bytes]) -> tuple[int, str]:
    """Size and hex sha256 of a stream (the audit's check of a stored object)."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
