"""The notifier against a local stand-in for Slack's chat.postMessage and a webhook receiver
(aiohttp.web on 127.0.0.1): once per finished work with two notifiers, retries with backoff,
Retry-After honoured, the refusal of an unknown webhook key, escaping, the notify pipeline."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

import workflow
from conftest import eventually, running
from workflow.core import events as ev
from workflow.core.display import describe
from workflow.core.errors import ConflictError, ValidationError
from workflow.core.work import Work
from workflow.followers.notifier import run_notifier


@dataclass
class StandIn:
    """Slack's chat.postMessage at /api/chat.postMessage and a webhook at /hook: records each
    request (time, path, headers, JSON) and answers from ``answers`` (then 200 ok)."""

    url: str = ""
    requests: list[tuple[float, str, dict[str, str], Any]] = field(default_factory=list)
    answers: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)

    def ok(self, path: str) -> list[Any]:
        """The JSON bodies of the requests to ``path`` that were answered 200."""
        return [body for (_, p, headers, body) in self.requests if p == path and headers.get("answered") == "200"]


@pytest.fixture
async def stand_in(monkeypatch):
    fake = StandIn()

    async def answer(request: web.Request) -> web.Response:
        body = await request.json()
        status, headers = fake.answers.popleft() if fake.answers else (200, {})
        fake.requests.append((time.monotonic(), request.path, {**request.headers, "answered": str(status)}, body))
        if status != 200:
            return web.json_response({"ok": False, "error": "ratelimited"}, status=status, headers=headers)
        if request.path == "/hook":
            return web.json_response({"received": True})
        return web.json_response({"ok": True, "channel": body["channel"], "ts": str(len(fake.requests)),
                                  "message": {"text": body["text"]}})

    app = web.Application()
    app.router.add_post("/api/chat.postMessage", answer)
    app.router.add_post("/hook", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("WORKFLOW_SLACK_API", f"{fake.url}/api")
    monkeypatch.setenv("WORKFLOW_SLACK_TOKEN", "xoxb-test")
    monkeypatch.setenv("WORKFLOW_WEBHOOKS", f"alerts={fake.url}/hook")
    monkeypatch.setenv("WORKFLOW_NOTIFY_BACKOFF", "0.2")
    monkeypatch.setenv("WORKFLOW_WEB_URL", "https://frb.example/ui")
    try:
        yield fake
    finally:
        await runner.cleanup()


SLACK = "/api/chat.postMessage"


def slack_work(message: str = "done", **fields) -> Work:
    return Work(pipeline="alpha", notify={"slack": {"channel_id": "C1", "message": message}}, **fields)


async def notified(client, work_id: str) -> list[ev.Notified]:
    return [e for e in await client.history(work_id) if isinstance(e, ev.Notified)]


async def end(client, work_id: str, ok: bool) -> None:
    work = await client.withdraw("alpha", timeout=10)
    assert work is not None and work.id == work_id
    if ok:
        await client.succeed(work, {"value": 1})
    else:
        await client.fail(work, "error", "boom", retry=False)


async def test_one_message_per_finished_work_with_two_notifiers(client, stand_in):
    ids = await client.deposit([slack_work(f"work {n}", priority=5) for n in range(12)])
    async with running(run_notifier, client.url, count=2):
        held = await client.withdraw_many("alpha", 12)  # all end at once: both notifiers are busy
        assert sorted(w.id for w in held) == sorted(ids)
        await asyncio.gather(*(client.succeed(w, {"value": 1}) if n % 2 == 0 else
                               client.fail(w, "error", "boom", retry=False) for n, w in enumerate(held)))
        [quiet] = await client.deposit(Work(pipeline="alpha", priority=5))  # no notify: no message
        await end(client, quiet, ok=True)
        [cancelled] = await client.deposit(slack_work("not on cancel"))
        await client.cancel(cancelled)  # the default statuses are success and failure

        async def all_recorded() -> bool:
            return all([await notified(client, work_id) for work_id in ids])

        await eventually(all_recorded, timeout=30)
    # every work told once, by one of the two, and each message is its own
    for work_id in ids:
        [event] = await notified(client, work_id)
        assert event.ok and event.attempts == 1 and event.status in ("success", "failure")
        assert event.reply is not None and event.reply["slack:C1"]["ok"] is True
    texts = [body["text"] for body in stand_in.ok(SLACK)]
    assert len(texts) == len(ids)
    assert sorted(work_id for work_id in ids for text in texts if work_id in text) == sorted(ids)
    assert await notified(client, quiet) == [] and await notified(client, cancelled) == []
    headers = stand_in.requests[0][2]
    assert headers["Authorization"] == "Bearer xoxb-test"
    assert any("boom" in text and ":x:" in text for text in texts)
    assert all("https://frb.example/ui/works/" in text for text in texts)


async def test_a_notified_work_still_reads_as_ended_to_those_who_read_its_head(client, stand_in):
    [work_id] = await client.deposit(slack_work())
    async with running(run_notifier, client.url):
        await end(client, work_id, ok=True)
        await eventually(lambda: notified(client, work_id), timeout=30)
    assert isinstance((await client.head(work_id)).event, ev.Notified)
    [after] = await client.deposit(Work(pipeline="beta", precursors=[work_id]))
    assert (await client.get(after)).status == "queued"  # its precursor succeeded: nothing to wait for
    with pytest.raises(ConflictError, match="already finished"):
        await client.cancel(work_id)
    await client.delete(work_id)
    assert (await client.get(work_id)).status == "deleted"


async def test_a_500_then_a_200_is_one_message_and_two_attempts_recorded(client, stand_in):
    stand_in.answers.append((500, {}))
    [work_id] = await client.deposit(slack_work())
    async with running(run_notifier, client.url):
        await end(client, work_id, ok=True)
        [event] = await eventually(lambda: notified(client, work_id), timeout=30)
    assert event.ok and event.attempts == 2
    assert event.errors is not None and len(event.errors) == 1 and "HTTP 500" in event.errors[0]
    assert len(stand_in.ok(SLACK)) == 1 and len(stand_in.requests) == 2
    assert describe(event) == "notified of success (2 attempts): slack:C1"


async def test_a_429_with_retry_after_2_makes_the_next_attempt_wait_at_least_2_s(client, stand_in):
    stand_in.answers.append((429, {"Retry-After": "2"}))
    [work_id] = await client.deposit(slack_work())
    async with running(run_notifier, client.url):
        await end(client, work_id, ok=True)
        [event] = await eventually(lambda: notified(client, work_id), timeout=30)
    assert event.ok and event.attempts == 2
    (first, *_), (second, *_) = stand_in.requests
    assert second - first >= 2.0  # the backoff alone would be 0.2 s


async def test_a_webhook_key_the_configuration_lacks_is_refused_at_deposit(client, stand_in):
    bad = Work(pipeline="alpha", notify={"webhook": {"key": "pager"}})
    with pytest.raises(ValidationError, match="unknown webhook key 'pager'; the configured webhooks are: alerts"):
        await client.deposit([Work(pipeline="alpha"), bad])
    assert await client.withdraw("alpha") is None  # nothing of the call was deposited


async def test_user_text_arrives_escaped_and_the_webhook_gets_its_template_filled(client, stand_in):
    work = Work(pipeline="alpha", user="<b>eve</b>", notify={
        "slack": {"channel_id": "C1", "message": "<script>alert(1)</script>"},
        "webhook": {"key": "alerts", "body": {"text": "{pipeline} {id} {status} by {user}"}}})
    [work_id] = await client.deposit(work)
    async with running(run_notifier, client.url):
        await end(client, work_id, ok=False)
        [event] = await eventually(lambda: notified(client, work_id), timeout=30)
    assert event.ok and set(event.reply or {}) == {"slack:C1", "webhook:alerts"}
    [message] = stand_in.ok(SLACK)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in message["text"] and "<script>" not in message["text"]
    assert "&lt;b&gt;eve&lt;/b&gt;" in message["text"]
    [hook] = stand_in.ok("/hook")
    assert hook == {"text": f"alpha {work_id} failure by <b>eve</b>"}


async def test_after_max_attempts_the_failure_is_recorded_and_the_audit_lists_it(
    client, stand_in, results_service, monkeypatch
):
    monkeypatch.setenv("WORKFLOW_NOTIFY_ATTEMPTS", "3")
    stand_in.answers.extend([(503, {})] * 3)
    [work_id] = await client.deposit(slack_work())
    async with running(run_notifier, client.url):
        await end(client, work_id, ok=True)
        [event] = await eventually(lambda: notified(client, work_id), timeout=30)
    assert not event.ok and event.attempts == 3 and len(event.errors or []) == 3
    assert "gave up after 3 attempts" in (event.error or "")
    assert (await client.get(work_id)).status == "success"  # the work itself is as it ended

    async def listed() -> list[dict[str, Any]]:
        answer = await client.results.audit()
        return [a for a in answer["anomalies"] if a["kind"] == "notify" and a.get("work_id") == work_id]

    [anomaly] = await eventually(listed, timeout=30)
    assert "failed after 3 attempt(s)" in anomaly["detail"]


async def test_a_work_of_the_notify_pipeline_is_a_message_the_notifier_sends(client, stand_in):
    message = Work(pipeline="notify", notify={"slack": {"channel_id": "C7", "member_ids": ["U1"],
                                                        "message": "beam 7 <is> back"}})
    [work_id] = await client.deposit(message)
    async with running(run_notifier, client.url):
        async def done():
            work = await client.get(work_id)
            return work if work.finished else None

        work = await eventually(done, timeout=30)
    assert work.status == "success" and work.results["reply"]["slack:C7"]["ok"] is True
    [body] = stand_in.ok(SLACK)
    assert body["channel"] == "C7" and body["text"] == "<@U1> beam 7 &lt;is&gt; back"
    assert await notified(client, work_id) == []  # the message is the work: not told of again


async def test_a_slow_slack_does_not_hold_up_other_works(client, stand_in, monkeypatch):
    """A work whose message keeps failing (backoff) does not delay the next work's message."""
    monkeypatch.setenv("WORKFLOW_NOTIFY_BACKOFF", "5")
    stand_in.answers.append((500, {}))  # the first message waits 5 s for its second try
    [slow] = await client.deposit(slack_work("slow", priority=5))
    [fast] = await client.deposit(slack_work("fast", priority=4))
    async with running(run_notifier, client.url):
        await end(client, slow, ok=True)
        await eventually(lambda: asyncio.sleep(0, result=len(stand_in.requests) >= 1), timeout=30)
        await end(client, fast, ok=True)
        [event] = await eventually(lambda: notified(client, fast), timeout=4)  # well before the 5 s backoff ends
        assert await notified(client, slow) == []
        await eventually(lambda: notified(client, slow), timeout=30)
    assert event.ok and event.attempts == 1




async def _workflow(*args: str) -> tuple[int, str]:
    """Run the ``workflow`` CLI without blocking the loop (the stand-in answers on it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflow.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "250"},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    return process.returncode or 0, out.decode()


async def test_workflow_notify_test_and_history_through_a_real_server(tmp_path, stand_in):
    from test_server import start_server

    process, url = await asyncio.to_thread(start_server, tmp_path)
    try:
        code, out = await _workflow("notify", "test", "--channel", "C42", "--message", "hello <team>", "--nats", url)
        assert code == 0, out
        assert "sent after 1 attempt(s)" in out and '"slack:C42"' in out
        [body] = stand_in.ok(SLACK)
        assert body["channel"] == "C42" and body["text"] == "hello &lt;team&gt;"

        async with workflow.connect(url) as client:
            [work_id] = await client.deposit(slack_work())
            await end(client, work_id, ok=True)
            await eventually(lambda: notified(client, work_id), timeout=30)
        code, out = await _workflow("history", work_id, "--nats", url)
        assert code == 0, out
        assert "Notified" in out and "notified of success (1 attempt): slack:C1" in out
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
