"""TLS for the connection to NATS: one ``ssl.SSLContext`` from a CA and a client certificate,
and the guard that turns a failed handshake into an error at once instead of a hang."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from workflow.core.errors import ConnectionFailedError, WorkflowError
from workflow.core.settings import redacted

T = TypeVar("T")

#: Seconds nats-py is given to give up by itself after a failed handshake before it is stopped.
HANDSHAKE_GRACE = 1.0


def tls_context(ca: Path | str | None = None, cert: Path | str | None = None,
                key: Path | str | None = None) -> ssl.SSLContext:
    """A client context for ``workflow.connect(url, tls=...)``: it verifies the server with
    ``ca`` (else the system's CAs) and, given ``cert`` (and its ``key``, unless the
    certificate file holds it), proves this client to a server that asks (``verify: true``)."""
    if key is not None and cert is None:
        raise WorkflowError("a TLS key needs its certificate (--nats-tls-cert)")
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        if cert is not None:
            context.load_cert_chain(str(cert), str(key) if key is not None else None)
    except (OSError, ssl.SSLError) as error:
        raise WorkflowError(f"cannot load TLS files: {error}") from None
    return context


class HandshakeFailures:
    """The TLS handshakes that failed while connecting, and a bound on what follows them.

    When the client's own check of the server fails (no ``--nats-tls-ca`` for a server with a
    private CA, or the wrong one), nats-py reports the ``ssl.SSLError`` to the error callback
    and then waits, forever, for the plain socket it upgraded to close (nats-io/nats.py#718:
    the socket now belongs to the TLS protocol, so the plain stream never hears it close).
    :meth:`bounded` awaits the connect, and once a handshake failed gives it
    :data:`HANDSHAKE_GRACE` seconds to end by itself before stopping it with
    ``TimeoutError``, so the caller can say what failed within seconds.
    """

    def __init__(self, grace: float = HANDSHAKE_GRACE) -> None:
        self.grace = grace
        self.errors: list[ssl.SSLError] = []
        self._failed = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self.errors)

    @property
    def last(self) -> ssl.SSLError:
        """The last failure: its ``reason`` (``CERTIFICATE_VERIFY_FAILED``…) says why."""
        return self.errors[-1]

    def note(self, error: BaseException) -> None:
        """Remember ``error`` if it is a TLS failure (for the connection's error callback)."""
        if isinstance(error, ssl.SSLError):
            self.errors.append(error)
            self._failed.set()

    async def error_callback(self, error: Exception) -> None:
        """``nats.connect(error_cb=...)`` for a caller with nothing else to do with errors."""
        self.note(error)

    def error(self, url: str) -> ConnectionFailedError:
        """The one line that says the handshake with ``url`` failed, and what to give."""
        return ConnectionFailedError(
            f"TLS handshake with NATS at {redacted(url)} failed ({self.last.reason or self.last}); "
            "check --nats-tls-ca, and give --nats-tls-cert and --nats-tls-key if the server "
            "verifies clients."
        )

    async def bounded(self, connecting: Awaitable[T]) -> T:
        """``await connecting``, or ``TimeoutError`` :attr:`grace` seconds after a handshake failed."""
        connect = asyncio.ensure_future(connecting)
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({connect, failed}, return_when=asyncio.FIRST_COMPLETED)
            if connect.done():
                return connect.result()
            done, _ = await asyncio.wait({connect}, timeout=self.grace)
            if done:
                return connect.result()
            raise TimeoutError(f"TLS handshake failed: {self.last}")
        finally:
            failed.cancel()
            if not connect.done():
                connect.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connect
