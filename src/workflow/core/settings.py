"""Defaults that operators change through the environment (and tests shorten).

Read at use, not at import, so a test or a CLI flag that sets the variable takes effect.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from urllib.parse import unquote

DEFAULT_URL = "nats://127.0.0.1:4222"

#: The telescope's sites. ``WORKFLOW_SITES`` (comma-separated) adds more.
KNOWN_SITES: tuple[str, ...] = (
    "chime", "allenby", "kko", "gbo", "hco", "canfar", "cedar", "aro", "local",
)


def allowed_sites() -> frozenset[str]:
    """The known sites plus ``WORKFLOW_SITES``, read at each call (a test or an operator
    that sets the variable is heard at once; the set is built once per distinct value)."""
    return _sites(os.environ.get("WORKFLOW_SITES", ""))


@lru_cache(maxsize=8)
def _sites(extra: str) -> frozenset[str]:
    return frozenset(KNOWN_SITES) | {s.strip() for s in extra.split(",") if s.strip()}


def nats_url(url: str | None = None) -> str:
    """``url``, else ``WORKFLOW_NATS_URL``, else the embedded server's default address
    (one URL, or a comma-separated list: see :func:`nats_servers`)."""
    return url or os.environ.get("WORKFLOW_NATS_URL") or DEFAULT_URL


def nats_servers(url: str | None = None) -> list[str]:
    """The server URLs of :func:`nats_url`: a comma-separated list (a cluster's nodes, as every
    NATS tool takes them) split into what ``nats.connect(servers=...)`` expects."""
    servers = [part.strip() for part in nats_url(url).split(",") if part.strip()]
    return servers or [DEFAULT_URL]


#: The credentials part of a URL: ``scheme://user:password@`` or ``scheme://token@``.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/\s,]*)@")


def redacted(url: str) -> str:
    """``url`` (or a comma-separated list) fit to print: a password or a token replaced by
    ``***``, the user name kept (``nats://viewer:***@host:4222``)."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:***@" if colon else f"{match['scheme']}***@"

    return _USERINFO.sub(hide, url)


def url_user(url: str) -> str | None:
    """The user name a URL logs in with (``nats://viewer:pw@host``: ``viewer``), if any."""
    match = _USERINFO.search(url)
    if match is None or ":" not in match["userinfo"]:
        return None
    return unquote(match["userinfo"].partition(":")[0]) or None


def url_has_token(url: str) -> bool:
    """Whether a URL carries a token (``nats://TOKEN@host``)."""
    match = _USERINFO.search(url)
    return match is not None and ":" not in match["userinfo"] and bool(match["userinfo"])


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None


def lease_seconds() -> float:
    """How long a work may go without a heartbeat before it is handed to another worker.

    This is the bucket consumers' AckWait; workers heartbeat every third of it. It bounds
    how late a crashed worker's work is noticed. ``WORKFLOW_LEASE_SECONDS``, default 30.
    """
    return _float("WORKFLOW_LEASE_SECONDS", 30.0)


def retry_backoff_seconds() -> float:
    """First delay before a failed work is retried; doubles at each attempt (max 300 s).

    ``WORKFLOW_RETRY_BACKOFF``, default 5.
    """
    return _float("WORKFLOW_RETRY_BACKOFF", 5.0)


MAX_RETRY_DELAY = 300.0


def webhooks() -> dict[str, str]:
    """The webhooks the server may call, by key: ``WORKFLOW_WEBHOOKS`` as ``key=url,key=url``.
    A depositor names a key (``notify.webhook.key``), never a URL, so the server calls only
    the addresses its operator listed; a key missing here is refused at deposit. A
    depositor's host may list bare keys (``alerts,pager``: their URLs are the server's)."""
    return _webhooks(os.environ.get("WORKFLOW_WEBHOOKS", ""))


@lru_cache(maxsize=8)
def _webhooks(raw: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in raw.split(","):
        key, sep, url = part.partition("=")
        if not part.strip():
            continue
        if not key.strip() or (sep and not url.strip()):
            raise ValueError(f"WORKFLOW_WEBHOOKS is key=url,key=url (or bare keys); got {part.strip()!r}")
        found[key.strip()] = url.strip()
    return found


#: The products object store's size when ``WORKFLOW_PRODUCTS_MAX_BYTES`` is unset: 10 GiB.
DEFAULT_PRODUCTS_MAX_BYTES = 10 << 30


def products_max_bytes() -> int:
    """The size (bytes) of the products object store that ``workflow server`` creates, apart
    from the log's stream so products can never fill the log's disk.
    ``WORKFLOW_PRODUCTS_MAX_BYTES``, default 10 GiB."""
    raw = os.environ.get("WORKFLOW_PRODUCTS_MAX_BYTES")
    if not raw:
        return DEFAULT_PRODUCTS_MAX_BYTES
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"WORKFLOW_PRODUCTS_MAX_BYTES must be a number of bytes, got {raw!r}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable from this host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
