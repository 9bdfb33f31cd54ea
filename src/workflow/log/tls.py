"""TLS for the connection to NATS: one ``ssl.SSLContext`` from a CA and a client certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

from workflow.core.errors import WorkflowError


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
