"""Identifiers: sortable, made by the client.

A work id is a ULID: 26 characters, sortable by creation time, unique without a
coordinator. Because the client makes it *before* the deposit, a retried deposit
carries the same id and the log refuses the second copy.
"""

from __future__ import annotations

import os
import socket

from ulid import ULID


def new_id() -> str:
    """A new ULID string (time-sortable, 26 chars, Crockford base32)."""
    return str(ULID())


def worker_name() -> str:
    """``host:pid``: names who did something, recorded in events for the audit trail."""
    return f"{socket.gethostname()}:{os.getpid()}"
