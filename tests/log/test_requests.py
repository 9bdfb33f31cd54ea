"""The appends' request path: nats-py's answers and errors, against a real nats-server."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from workflow.log.connection import connect
from workflow.log.requests import Requests


@pytest.fixture
async def nc(nats_server):
    connection = await connect(nats_server.url)
    yield connection
    await connection.close()


async def _responder(nc, subject: str, answer):
    """A subscriber that answers each request with ``answer(msg)``."""

    async def reply(msg) -> None:
        await nc.publish(msg.reply, answer(msg), headers={"Echo": (msg.headers or {}).get("Asked", "")})

    return await nc.subscribe(subject, cb=reply)


async def test_each_request_gets_its_own_reply_with_headers_both_ways(nc) -> None:
    await _responder(nc, "svc.echo", lambda msg: b"re: " + msg.data)
    requests = Requests(nc)
    replies = await asyncio.gather(*(
        requests.request("svc.echo", str(n).encode(), headers={"Asked": str(n)}) for n in range(300)
    ))
    assert [r.data for r in replies] == [b"re: " + str(n).encode() for n in range(300)]
    assert [r.headers["Echo"] for r in replies] == [str(n) for n in range(300)]
    assert requests._pending == {}  # nothing left behind


async def test_an_unanswered_request_times_out_as_nats_py_says_and_a_late_reply_is_ignored(nc) -> None:
    held = []

    async def hold(msg) -> None:  # a responder that never answers in time
        held.append(msg)

    await nc.subscribe("svc.slow", cb=hold)
    requests = Requests(nc)
    with pytest.raises(nats.errors.TimeoutError):
        await requests.request("svc.slow", b"?", timeout=0.3)
    assert requests._pending == {}
    await nc.publish(held[0].reply, b"too late")  # the reply after the timeout: dropped quietly
    await nc.flush()
    await _responder(nc, "svc.echo", lambda msg: msg.data)
    assert (await requests.request("svc.echo", b"still works")).data == b"still works"


async def test_a_subject_nobody_listens_on_raises_no_responders(nc) -> None:
    with pytest.raises(nats.errors.NoRespondersError):
        await Requests(nc).request("svc.nobody", b"?", timeout=5)


async def test_concurrent_first_requests_share_one_inbox_subscription(nc) -> None:
    await _responder(nc, "svc.echo", lambda msg: msg.data)
    before = len(nc._subs)
    requests = Requests(nc)
    await asyncio.gather(*(requests.request("svc.echo", b"x") for _ in range(20)))
    assert len(nc._subs) == before + 1
