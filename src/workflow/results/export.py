"""Exporting the read model as Parquet, written on the machine of the person who asked.

No request from the network names a path on the server. ``workflow export DIR`` asks the
results service to *open* an export: the service snapshots its tables in one read
transaction (so ``works``, ``events``, ``rejected`` and ``checkpoint`` agree with each
other) into Parquet files in a temporary directory it chooses itself, and answers with
their sizes. The client then pulls each file in chunks under NATS's max payload, one
request per chunk (so a slow client slows only itself: nothing is pushed at it), writes
``DIR/<table>.parquet`` locally, refusing to overwrite, and closes the export. An export
nobody closes is removed after ``IDLE_SECONDS``; at most ``MAX_OPEN`` are open at once,
so the network cannot fill the server's disk.

The request (:class:`ExportRequest`) refuses unknown fields: the old ``directory``
parameter is refused, not ignored.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import nats.errors

from workflow.core.errors import ValidationError, WorkflowError
from workflow.results.queries import SUBJECT, raise_for_error

TABLES = ("works", "events", "rejected", "checkpoint")
Table = Literal["works", "events", "rejected", "checkpoint"]
_ORDER = {"works": "id", "events": "seq", "rejected": "seq", "checkpoint": "stream"}
#: Open exports at once, and how long an untouched one is kept.
MAX_OPEN = 2
IDLE_SECONDS = 120.0


class ExportRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``{}``: open an export. ``{"id", "table", "offset"}``: the next chunk of one file.
    ``{"id", "close": true}``: done, remove it."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    table: Table | None = None
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    close: bool = False


class Opened(msgspec.Struct, kw_only=True):
    """The answer to an open: the export's id, the position it holds, its files' sizes."""

    id: str
    seq: int
    sizes: dict[str, int]


def write_parquet(con: Any, directory: Path) -> list[Path]:
    """Write every table as ``directory/<table>.parquet``, from one read transaction.

    For a directory of this machine only: the service calls it on a temporary directory
    it made, ``workflow export --db`` on the user's own directory. Refuses to overwrite
    (an export is a record). Closes ``con``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    targets = [directory / f"{table}.parquet" for table in TABLES]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        con.close()
        raise ValidationError("directory", f"{', '.join(existing)} already exist; export into a new directory")
    try:
        con.execute("BEGIN TRANSACTION")
        for table, target in zip(TABLES, targets, strict=True):
            literal = str(target).replace("'", "''")
            con.execute(f"COPY (SELECT * FROM {table} ORDER BY {_ORDER[table]}) "
                        f"TO '{literal}' (FORMAT parquet, COMPRESSION zstd)").fetchall()
        con.execute("COMMIT")
    finally:
        con.close()
    return targets


class Exports:
    """The service's open exports: snapshots in temporary directories, read by chunks."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[Path, float]] = {}
        atexit.register(self.close_all)

    def open(self, con: Any) -> Opened:
        """Snapshot the tables of ``con`` (a cursor of its own, closed here)."""
        self._expire()
        if len(self._open) >= MAX_OPEN:
            con.close()
            raise WorkflowError(f"{MAX_OPEN} exports are in progress already; try again in a moment")
        directory = Path(tempfile.mkdtemp(prefix="workflow-export-"))
        try:
            files = write_parquet(con, directory)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        export_id = directory.name
        self._open[export_id] = (directory, time.monotonic())
        seq = _checkpoint_of(directory / "checkpoint.parquet")
        return Opened(id=export_id, seq=seq, sizes={f.stem: f.stat().st_size for f in files})

    def read(self, export_id: str, table: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of one file of an open export, from ``offset``."""
        directory = self._directory(export_id)
        with (directory / f"{table}.parquet").open("rb") as file:
            file.seek(offset)
            return file.read(length)

    def close(self, export_id: str) -> None:
        directory = self._directory(export_id)
        del self._open[export_id]
        shutil.rmtree(directory, ignore_errors=True)

    def close_all(self) -> None:
        for directory, _ in self._open.values():
            shutil.rmtree(directory, ignore_errors=True)
        self._open.clear()

    def _directory(self, export_id: str) -> Path:
        self._expire()
        if export_id not in self._open:
            raise ValidationError("id", f"no open export {export_id!r} (closed, or idle over {IDLE_SECONDS:g}s)")
        directory, _ = self._open[export_id]
        self._open[export_id] = (directory, time.monotonic())
        return directory

    def _expire(self) -> None:
        now = time.monotonic()
        for export_id, (directory, used) in list(self._open.items()):
            if now - used > IDLE_SECONDS:
                del self._open[export_id]
                shutil.rmtree(directory, ignore_errors=True)


def _checkpoint_of(path: Path) -> int:
    import pyarrow.parquet as pq

    seqs = pq.read_table(path, columns=["seq"]).column("seq").to_pylist()
    return int(seqs[0]) if seqs else 0


# -- the client side ----------------------------------------------------------------------


async def _ask(nc: Any, body: dict[str, Any], timeout: float) -> bytes:
    """One export request; the service's error answers as our errors."""
    try:
        reply = await nc.request(f"{SUBJECT}.export", msgspec.json.encode(body), timeout=timeout)
    except nats.errors.NoRespondersError:
        raise WorkflowError("no results service answers (it runs in `workflow server`)") from None
    raise_for_error(reply.headers)
    data: bytes = reply.data
    return data


async def download(nc: Any, directory: Path, *, timeout: float = 30.0) -> tuple[int, list[Path]]:
    """Export the live projection into ``directory`` on this machine (new files only).

    Returns the stream position the export holds and the files written. A failure
    midway removes what it wrote.
    """
    targets = {table: directory / f"{table}.parquet" for table in TABLES}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing:
        raise ValidationError("directory", f"{', '.join(existing)} already exist; export into a new directory")
    opened = msgspec.json.decode(await _ask(nc, {}, timeout), type=Opened)
    written: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for table, target in targets.items():
            with target.open("xb") as file:  # x: never overwrite, even a file made meanwhile
                written.append(target)
                await _pull(nc, opened, table, file, timeout)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            await _ask(nc, {"id": opened.id, "close": True}, timeout)
    return opened.seq, written


async def _pull(nc: Any, opened: Opened, table: str, file: Any, timeout: float) -> None:
    """Copy one file of an open export, chunk by chunk."""
    size = opened.sizes[table]
    offset = 0
    while offset < size:
        chunk = await _ask(nc, {"id": opened.id, "table": table, "offset": offset}, timeout)
        if not chunk:
            raise WorkflowError(f"the export of {table} ended at byte {offset} of {size}")
        file.write(chunk)
        offset += len(chunk)
