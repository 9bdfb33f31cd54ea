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

:func:`open_connection` is the one way this package connects: with a time limit, and a
failure named (a refused login, a TLS handshake, no server), never nats-py's bare
"no servers available".

It also keeps the case of a refused subject: nats-py lower-cases every ``-ERR`` before
handing it on, so a permission error would name ``wf.p.01m93p82…`` for the work
``01M93P82…`` (and ``$js.api…``). :meth:`Connection._process_err` reads the line as the
server sent it (still at the head of the parser's buffer while the error is handled).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import nats.aio.client
import nats.errors
from nats.protocol.parser import ERR_RE, PERMISSIONS_ERR

from workflow.core.errors import ConnectionFailedError, PermissionDeniedError
from workflow.core.settings import nats_servers, redacted
from workflow.log.permissions import RefusalWatch
from workflow.log.tls import HandshakeFailures

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


#: Seconds one connect attempt may take (per server of a cluster's list).
CONNECT_TIMEOUT = 2.0


async def open_connection(
    url: str,
    *,
    refusals: RefusalWatch | None = None,
    on_error: Callable[[Exception], Awaitable[None]] | None = None,
    attempts: int = 2,
    **options: Any,
) -> nats.aio.client.Client:
    """A connected :class:`Connection` to ``url`` (one URL, or a comma-separated list of a
    cluster's), or the failure named:

    - PermissionDeniedError at once for a refused login, naming the user (nats-py alone
      retries it and then says "no servers available");
    - the TLS handshake's error (nats-py hangs after one: bounded here);
    - ConnectionFailedError "cannot reach NATS at URL" (credentials redacted) otherwise,
      after ``attempts`` tries of :data:`CONNECT_TIMEOUT` seconds each.

    Once connected, it reconnects for ever (a long-running part rides out a restart).

    ``refusals`` (a :class:`RefusalWatch`, made here if not given) is the connection's
    error callback: once connected it also fails a refused request at once. ``on_error``
    hears every error after it. ``options`` go to ``nats.connect``.
    """
    refusals = refusals if refusals is not None else RefusalWatch(url, options)
    tls_failures = HandshakeFailures()

    async def error_cb(error: Exception) -> None:
        tls_failures.note(error)  # the cause behind nats-py's "no servers available"
        await refusals(error)  # a refused login or publish: said at once, not after a timeout
        if on_error is not None:
            await on_error(error)

    options.setdefault("reconnect_time_wait", 0.5)
    try:
        nc = await refusals.bounded(tls_failures.bounded(connect(
            servers=nats_servers(url), connect_timeout=CONNECT_TIMEOUT, max_reconnect_attempts=attempts,
            error_cb=error_cb, **options,
        )))
    except PermissionDeniedError:
        raise
    except (TimeoutError, OSError, nats.errors.Error) as error:
        if refusals.login_refused is not None:
            raise refusals.login_refused from None
        if tls_failures:
            raise tls_failures.error(redacted(url)) from None
        raise ConnectionFailedError(
            f"cannot reach NATS at {redacted(url)} ({type(error).__name__}: {error}). "
            "Start one with `workflow server`, or point to yours with --nats URL or WORKFLOW_NATS_URL."
        ) from None
    refusals.nc = nc  # a refused request fails at once, naming the subject
    # nats-py applies one setting to the first connect and to reconnects; -1 at first
    # connect would hang forever on a wrong URL, so "reconnect forever" (a worker, the
    # metrics, must ride out a server restart) is set once connected.
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 1
    return nc
