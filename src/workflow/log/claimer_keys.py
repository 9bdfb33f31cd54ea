"""Filtered claimers' keys: how a filtered claimer says it is alive, and how the bucket asks.

A filtered withdraw claims a work without holding its queue message (DESIGN.md, "Withdraw
filters"), so the message's AckWait cannot carry its lease. The claimer keeps one key per
held work in a JetStream key-value bucket instead (``workflow-claims``: the stream
``KV_workflow-claims``, so ``nats kv get workflow-claims ID`` reads it), put every third of
its lease with a per-message TTL of one lease: the key lives exactly as long as the
heartbeats come. Not an event: liveness is not history, and the log stays what happened.

Per-message TTL (``Nats-TTL``, nats-server >= 2.11, which workflow needs anyway) rather
than the bucket's ``max_age``: each claimer's key lives for *its own* lease, so clients
with different leases share one bucket. A key's value names the claimer and the attempt,
so a key left by an earlier claim never vouches for a later one.

The bucket's watchdog (:mod:`workflow.log.claims`) reads the key with a direct get: absent
(expired, or ended), or naming another attempt, means the claimer is gone. (The heartbeat
of a work held through its queue message, bucket or filtered, is :mod:`workflow.log.leases`.)
"""

from __future__ import annotations

import contextlib
import json
import logging

import msgspec
import nats.aio.client
import nats.errors

from workflow.core.errors import AlreadyExistsError, WorkflowError
from workflow.core.subjects import CLAIMS_BUCKET
from workflow.log import jsapi

log = logging.getLogger("workflow.client")

BUCKET = CLAIMS_BUCKET  # named in the core, where the roles' permissions need it too
STREAM = f"KV_{BUCKET}"
#: The stream behind the bucket: one key per work, each message gone after its own TTL.
STREAM_CONFIG = {
    "name": STREAM,
    "description": "Heartbeats of filtered claims: one key per held work, each living one lease (Nats-TTL).",
    "subjects": [f"$KV.{BUCKET}.>"],
    "retention": "limits",
    "max_msgs_per_subject": 1,
    "storage": "file",  # a server restart must not make live claimers look dead
    "discard": "old",
    "num_replicas": 1,
    "allow_direct": True,
    "allow_msg_ttl": True,
    "allow_rollup_hdrs": True,
    "deny_delete": True,
}
#: What a key is given when its claim ends: gone almost at once (a marker, not a value).
ENDED_TTL = 1.0


class Beat(msgspec.Struct, frozen=True):
    """A key's value: who holds the work, at which attempt."""

    by: str
    attempt: int


_decoder = msgspec.json.Decoder(Beat)


def key_subject(work_id: str) -> str:
    return f"$KV.{BUCKET}.{work_id}"


def _ttl(seconds: float) -> str:
    return f"{max(int(seconds * 1000), 1000)}ms"  # the server counts whole seconds at best


class Heartbeats:
    """Puts, ends and reads the heartbeat keys of filtered claims over one connection."""

    def __init__(self, nc: nats.aio.client.Client) -> None:
        self._nc = nc
        self._ready = False

    async def ensure(self) -> None:
        """Create the bucket's stream if it is missing (once per client)."""
        if self._ready:
            return
        info = await jsapi.request(self._nc, f"STREAM.INFO.{STREAM}")
        if "error" in info:
            created = await jsapi.request(self._nc, f"STREAM.CREATE.{STREAM}", STREAM_CONFIG)
            with contextlib.suppress(AlreadyExistsError):  # another client created it first
                jsapi.checked(created, f"cannot create the claim heartbeat bucket {BUCKET}")
        self._ready = True

    async def put(self, work_id: str, beat: Beat, lease: float) -> None:
        """Store the key and wait until the server has it: done before the ``Started`` is
        appended, so a claim in the log always had a live key first."""
        await self.ensure()
        reply = await self._nc.request(
            key_subject(work_id), msgspec.json.encode(beat), timeout=5, headers={"Nats-TTL": _ttl(lease)}
        )
        answer = json.loads(reply.data)
        if "error" in answer:
            raise WorkflowError(f"cannot store the heartbeat of {work_id}: {answer['error'].get('description')}")

    async def beat(self, work_id: str, beat: Beat, lease: float) -> None:
        """Renew the key for one more lease: a publish, not awaited on the server (as a
        message's ``in_progress``)."""
        await self._nc.publish(key_subject(work_id), msgspec.json.encode(beat), headers={"Nats-TTL": _ttl(lease)})

    async def end(self, work_id: str) -> None:
        """The claim ended (outcome recorded, given back, cancelled): remove its liveness."""
        await self._nc.publish(
            key_subject(work_id), b"", headers={"KV-Operation": "DEL", "Nats-TTL": _ttl(ENDED_TTL)}
        )

    async def alive(self, work_id: str, by: str | None, attempt: int) -> bool | None:
        """Whether ``by`` still heartbeats ``attempt`` of the work: True, False, or None
        when the bucket cannot be read (never record a loss without evidence)."""
        try:
            reply = await self._nc.request(
                f"$JS.API.DIRECT.GET.{STREAM}", json.dumps({"last_by_subj": key_subject(work_id)}).encode(), timeout=5
            )
        except nats.errors.NoRespondersError:
            return False  # no bucket: no claimer ever put a key, so none is alive
        except Exception as error:
            log.warning("reading the heartbeat of %s failed: %r", work_id, error)
            return None
        headers = reply.headers or {}
        status = headers.get("Status")
        if status == "404":
            return False
        if status is not None:
            log.warning("reading the heartbeat of %s failed: %s %s", work_id, status, headers.get("Description", ""))
            return None
        if headers.get("KV-Operation") in ("DEL", "PURGE") or not reply.data:
            return False
        try:
            held = _decoder.decode(reply.data)
        except msgspec.DecodeError:
            return False
        return held.by == by and held.attempt == attempt


class HeartbeatTicket:
    """What a filter-claimed lease holds in place of a queue message: the same four calls
    (see :class:`workflow.log.leases.Holding`), on the claim's heartbeat key."""

    def __init__(self, heartbeats: Heartbeats, work_id: str, beat: Beat, lease: float) -> None:
        self._heartbeats = heartbeats
        self._work_id = work_id
        self._beat = beat
        self._lease = lease
        self.reply = f"filter:{work_id}"  # names the claim in logs, as a message's reply subject does

    async def in_progress(self) -> None:
        await self._heartbeats.beat(self._work_id, self._beat, self._lease)

    async def ack(self) -> None:
        await self._heartbeats.end(self._work_id)

    async def nak(self, delay: float | None = None) -> None:
        await self._heartbeats.end(self._work_id)

    async def term(self) -> None:
        await self._heartbeats.end(self._work_id)
