"""Opening a NATS connection: nats-py's client, with a faster reader of message headers.

Why this exists: every event in the log carries three headers (its id for the stream's
de-duplication, and the compare-and-set pair ``Nats-Expected-Last-Subject-Sequence`` and
``…-Subject``), and JetStream hands them back with every message read: to the projector
(every event), to each worker (every deposit it hears, every delivery it fetches), to the
metrics follower. nats-py parses each header block in Python, checking each name
character by character; profiled under ``make bench`` that was ~24 µs a message, **30% of
the projector's reading thread and 13% of a worker's loop**. :func:`parse_headers`
returns the same dict (a property test holds it to nats-py's own parser on arbitrary
bytes) in about a fifth of the time, mainly because the few distinct header names are
checked once and remembered.

How: :class:`Connection` is nats-py's ``Client`` with its header-line parser replaced;
:func:`connect` is ``nats.connect`` returning one. Every connection this package opens
goes through it. nats-py ≥ 2.16 reads header lines through that one static method; a
test fails if a later nats-py stops doing so (the speed-up would silently vanish).

It also keeps the case of a refused subject: nats-py lower-cases every ``-ERR`` before
handing it on, so a permission error would name ``wf.p.01m93p82…`` for the work
``01M93P82…`` (and ``$js.api…``). :meth:`Connection._process_err` reads the line as the
server sent it (still at the head of the parser's buffer while the error is handled).
"""

from __future__ import annotations

from typing import Any

import nats.aio.client
import nats.errors
from nats.protocol.parser import ERR_RE, PERMISSIONS_ERR

_CRLF = b"\r\n"
#: What ``str.isspace`` calls whitespace in ASCII (nats-py skips names containing any).
_WHITESPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
#: Header names seen, raw bytes -> the checked name (None: not a valid name). Bounded:
#: a server sends a handful of distinct names; a hostile stream cannot grow it past this.
_NAMES: dict[bytes, str | None] = {}
_MAX_NAMES = 512


def _name(raw: bytes) -> str | None:
    """A header line's name as nats-py keeps it: stripped, ASCII, no whitespace inside."""
    if raw in _NAMES:
        return _NAMES[raw]
    stripped = raw.strip()
    name = stripped.decode() if stripped.isascii() and len(stripped.translate(None, _WHITESPACE)) == len(stripped) \
        else None
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[raw] = name
    return name


def parse_headers(raw: bytes) -> dict[str, str]:
    """``Name: Value`` lines (CRLF-separated) as a dict, exactly as nats-py parses them:
    lines without a colon and names that are not ASCII or contain whitespace are skipped;
    values are stripped and decoded as UTF-8 (invalid bytes replaced); a repeated name
    keeps its last value."""
    headers: dict[str, str] = {}
    for line in raw.split(_CRLF):
        name, colon, value = line.partition(b":")
        if colon:
            key = _name(name)
            if key is not None:
                headers[key] = value.strip().decode("utf-8", "replace")
    return headers


class Connection(nats.aio.client.Client):
    """nats-py's client reading message headers with :func:`parse_headers`."""

    _parse_header_lines = staticmethod(parse_headers)

    async def _process_err(self, err_msg: str) -> None:
        """nats-py's, but a permissions violation reaches the error callback as the server
        wrote it (subjects keep their case); nats-py handles every other error."""
        if PERMISSIONS_ERR in err_msg:
            sent = ERR_RE.match(self._ps.buf)
            if sent is not None and sent.group(1) is not None and sent.group(1).decode().lower() == err_msg:
                error = nats.errors.Error(f"nats: {sent.group(1).decode().strip(chr(39))}")
                self._err = error
                await self._error_cb(error)
                return
        await super()._process_err(err_msg)


async def connect(servers: str | list[str], **options: Any) -> nats.aio.client.Client:
    """``nats.connect``: a connected :class:`Connection` (same options, same errors)."""
    nc = Connection()
    await nc.connect(servers, **options)
    return nc
