"""The bucket keeper: the server creates a bucket when a client asks, and never changes one.

Why the server: in the JetStream API, creating a consumer is also updating it
(``$JS.API.CONSUMER.CREATE.<stream>.<name>`` with an existing name applies the new
configuration). A role allowed to create buckets could so rewrite any bucket: shorten the
lease (``ack_wait``) of every running work, cap its deliveries (``max_deliver``). So only
the server role may create, update or delete streams and consumers
(:mod:`workflow.core.roles`), and a depositor, a worker or an operator that needs a new
bucket asks for it on ``workflow.buckets.create``: ``{"pipeline", "site", "priority",
"lease"}``. The keeper checks the request, creates the bucket with ``action: create`` (the
server refuses that for an existing consumer, so an existing bucket is answered as it is,
whatever lease the request asked) and answers the consumer's info, as JetStream would.

Why on request, rather than as the server sees new pipelines go by in the log: a deposit
makes its buckets *before* its events, so a worker finds a work's bucket as soon as the
work is in the log; a worker given a site makes its buckets before its first pull. Watching
the log would leave a work without a bucket until the server caught up (the projector can
be minutes behind after a restart), and every such worker would have to wait and ask
again. A request is one round trip, once per bucket per client, and a client asks only for
a bucket it does not see.

The lease of a new bucket is the one its first client asks (its ``WORKFLOW_LEASE_SECONDS``),
as before; what no client can do any more is change a bucket's afterwards. Any number of
servers may run keepers: they share the requests (a queue group), and two creating the
same bucket at once both answer its info.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any

import msgspec
from nats.aio.msg import Msg

from workflow.core.errors import ValidationError
from workflow.core.subjects import BUCKET_REQUESTS, BucketKey
from workflow.core.work import Site, validate_field
from workflow.log.buckets import create_bucket
from workflow.log.client import Client

log = logging.getLogger("workflow.buckets")

#: The longest lease a request may ask for (a day): beyond it, a lost worker's work is lost for good.
MAX_LEASE = 86400.0


class BucketRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What a client asks for: a bucket (its fields checked as the Work's) and the lease a
    new one gets. A site is checked for its form only: which sites exist is the
    depositing host's to say (``WORKFLOW_SITES``), not the server's."""

    pipeline: str
    site: Site
    priority: int
    lease: Annotated[float, msgspec.Meta(gt=0, le=MAX_LEASE)]


_request = msgspec.json.Decoder(BucketRequest)


def requested_bucket(data: bytes) -> tuple[BucketKey, float]:
    """The bucket and lease a request asks for; ValueError says what is wrong with it."""
    try:
        request = _request.decode(data)
        for field in ("pipeline", "priority"):  # in the user's words
            validate_field(field, getattr(request, field))
    except (msgspec.DecodeError, ValidationError) as error:  # msgspec's ValidationError is a DecodeError
        raise ValueError(str(error)) from None
    return BucketKey(request.pipeline, request.site, request.priority), request.lease


async def answer(client: Client, msg: Msg) -> None:
    """Create the bucket ``msg`` asks for (if it is missing) and answer its info."""
    reply: dict[str, Any]
    try:
        key, lease = requested_bucket(msg.data)
    except ValueError as error:
        reply = {"error": {"code": 400, "description": f"invalid bucket request: {error}"}}
    else:
        reply = await create_bucket(client.nc, key, lease)
        if "error" in reply:
            log.warning("cannot create bucket %s: %s", key.consumer, reply["error"].get("description"))
        else:
            log.info("bucket %s ready (lease %.0f s)", key.consumer, reply["config"]["ack_wait"] / 1e9)
    if msg.reply:
        await client.nc.publish(msg.reply, json.dumps(reply).encode())


async def run_bucket_keeper(url: str, stop: asyncio.Event, **connect_options: Any) -> None:
    """Answer bucket requests until ``stop`` is set (``workflow server`` runs one)."""
    async with Client(url, name=connect_options.pop("name", "workflow-buckets"), **connect_options) as client:

        async def on_request(msg: Msg) -> None:
            try:
                await answer(client, msg)
            except Exception as error:  # one bad request never stops the keeper
                log.warning("bucket request failed: %r", error)
                if msg.reply:
                    failed = {"error": {"code": 500, "description": f"the server failed: {error!r}"}}
                    await client.nc.publish(msg.reply, json.dumps(failed).encode())

        subscription = await client.nc.subscribe(BUCKET_REQUESTS, queue="workflow-buckets", cb=on_request)
        try:
            await stop.wait()
        finally:
            await subscription.unsubscribe()
