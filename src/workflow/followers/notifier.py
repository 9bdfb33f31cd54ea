"""The notifier: sends a work's ``notify`` when the work ends, once, and records it.

Run by ``workflow server`` (any number may run). Two loops:

- **Works that end.** The notifiers share one durable consumer (``notifier``) on the final
  events' subjects (``wf.*.*.succeeded|failed|cancelled``), so each such event is handed
  to one notifier at a time. For a work whose ``notify`` lists the status it ended with
  (``notify.on``, else the server's ``WORKFLOW_NOTIFY_ON``, default success and failure),
  and that has no ``Notified`` after that event yet, the notifier sends the message
  (:mod:`workflow.followers.sending`: retried with backoff, a 429's ``Retry-After``
  honoured), then appends a ``Notified`` (the replies, or the errors) under the work's
  CAS, then acks. A second notifier never sees the same event while the first holds it
  (it beats ``in_progress`` while it works), and a redelivered event (a notifier that
  died) finds the ``Notified`` and sends nothing. Only a notifier that dies between its
  send and its ``Notified`` makes the next one send again: at least once across crashes,
  exactly once otherwise.
- **The ``notify`` pipeline.** A work deposited to it is a message to send: the notifier
  withdraws it from its bucket as a worker would (the lease makes it one notifier's),
  sends it, and records the outcome as the work's own (``Succeeded`` with the replies,
  or ``Failed``).

Each message is sent in its own task (at most :data:`CONCURRENCY` at once), so a slow
Slack holds up neither the log, nor the other followers, nor the other messages. After
``WORKFLOW_NOTIFY_ATTEMPTS`` tries the ``Notified`` says ``ok: false`` with every error,
and ``workflow audit`` lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from workflow.core import events as ev
from workflow.core import notify as nt
from workflow.core.errors import ConflictError, ValidationError, WorkflowError
from workflow.core.fold import fold
from workflow.core.subjects import PREFIX, STREAM
from workflow.core.work import Work
from workflow.followers.pulling import pull
from workflow.followers.restarts import restarting
from workflow.followers.sending import Outcome, Sender, Settings, Target, deliver
from workflow.log.client import Client
from workflow.log.gateway import UNAVAILABLE, Recorded
from workflow.log.lifetimes import cancel_and_wait, until_stopped_or_failed

log = logging.getLogger("workflow.notifier")

#: The durable consumer every notifier shares on the final events.
CONSUMER = "notifier"
FINAL_SUBJECTS = [f"{PREFIX}.*.*.succeeded", f"{PREFIX}.*.*.failed", f"{PREFIX}.*.*.cancelled"]
#: Seconds a notifier may hold an event without news before it goes to another (it beats
#: ``in_progress`` every third of it while it sends).
ACK_WAIT = 60.0
#: Messages sent at once by one notifier.
CONCURRENCY = 32
#: Tries at appending a ``Notified`` whose work's head keeps moving.
_TRIES = 5


class Notifier:
    """One notifier over one client's connection (see the module's docstring)."""

    def __init__(self, client: Client, settings: Settings, sender: Sender) -> None:
        self._client = client
        self.settings = settings
        self._sender = sender
        self._tasks: set[asyncio.Task[None]] = set()
        self._done = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Send notifications until ``stop`` is set."""
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT, max_ack_pending=CONCURRENCY * 4,
            deliver_policy=DeliverPolicy.ALL, filter_subjects=FINAL_SUBJECTS,
        )
        subscription = await self._client.nc.jetstream().pull_subscribe(
            "", durable=CONSUMER, stream=STREAM, config=config
        )
        try:
            await until_stopped_or_failed(stop, self._pull(subscription), self._notify_pipeline())
        finally:
            await cancel_and_wait(list(self._tasks))  # their events are redelivered to a notifier
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    # -- in flight -------------------------------------------------------------------------

    async def _free(self) -> int:
        """Slots free for new messages; waits for one when all are taken."""
        while len(self._tasks) >= CONCURRENCY:
            self._done.clear()
            await self._done.wait()
        return CONCURRENCY - len(self._tasks)

    def _spawn(self, part: Any, name: str) -> None:
        task = asyncio.create_task(part, name=name)
        self._tasks.add(task)

        def ended(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            self._done.set()
            if not done.cancelled() and done.exception() is not None:
                log.error("%s failed: %r", name, done.exception())

        task.add_done_callback(ended)

    # -- works that end ----------------------------------------------------------------------

    async def _pull(self, subscription: Any) -> None:
        while True:
            free = await self._free()
            for msg in await pull(subscription, free, "final events", log):
                self._spawn(self._handle(msg), f"notify {msg.subject}")

    async def _handle(self, msg: Msg) -> None:
        """Send the notification an ended work asks for (once), then ack its event.

        Until the message is sent, a failure to read the log hands the event back (``nak``:
        it comes again); once it is sent, the event is acked whatever happens to the record,
        so that no failure of ours makes Slack hear of a work twice."""
        beating = asyncio.create_task(_beat(msg))
        try:
            await self._notify_ended(msg)
            await msg.ack()
        except UNAVAILABLE as error:
            log.warning("notification for %s postponed (NATS away: %r)", msg.subject, error)
            await _quietly(msg.nak(delay=5))
        except WorkflowError as error:
            log.error("notification for %s postponed: %s", msg.subject, error)
            await _quietly(msg.nak(delay=5))
        except Exception:  # a bug: said loudly, and the event put aside rather than retried forever
            log.exception("notification for %s given up", msg.subject)
            await _quietly(msg.term())
        finally:
            beating.cancel()

    async def _notify_ended(self, msg: Msg) -> None:
        try:
            event = ev.decode(msg.data)
        except ValidationError:
            return  # not an event: nothing to tell
        if not ev.is_final(event) or event.pipeline == nt.NOTIFY_PIPELINE:
            return  # a failure that will be retried; or a message, sent as such
        seq = msg.metadata.sequence.stream
        records = await self._client.history_records(event.work_id, event.pipeline)
        if any(isinstance(r.event, ev.Notified) and r.seq > seq for r in records):
            return  # told already (this event was redelivered)
        work = fold((r.event for r in records if r.seq <= seq), skip_refused=True)
        if work is None or work.notify is None or work.status not in nt.statuses(work.notify, self.settings.on):
            return
        outcome = await deliver(self._targets(work, plain=False), self.settings)
        try:
            await self._record(work, records, outcome)
        except WorkflowError as error:  # sent, not recorded: said, never sent again
            log.error("work %s: notification sent (ok: %s) but not recorded: %s", work.id, outcome.ok, error)

    def _targets(self, work: Work, *, plain: bool) -> list[Target]:
        """What to send for ``work``, to whom: one try of each."""
        assert work.notify is not None and work.id is not None
        facts = nt.facts(work, nt.link_to(self.settings.web_url, work.id))
        targets: list[Target] = []
        slack, webhook = work.notify.slack, work.notify.webhook
        if slack is not None:
            for body in nt.slack_messages(facts, slack, plain=plain):
                targets.append((f"slack:{body['channel']}", _once(self._sender.slack, body)))
        if webhook is not None:
            body = nt.webhook_body(facts, webhook)
            targets.append((f"webhook:{webhook.key}", _once(self._sender.webhook, webhook.key, webhook.method, body)))
        return targets

    async def _record(self, work: Work, records: list[Recorded], outcome: Outcome) -> None:
        """Append the ``Notified`` under the work's CAS, against its head as last read."""
        assert work.id is not None
        event = ev.Notified(
            work_id=work.id, pipeline=work.pipeline, time=time.time(), by=self._client.name, status=work.status,
            ok=outcome.ok, attempts=outcome.attempts, reply=outcome.reply or None, errors=outcome.errors or None,
            error=outcome.error,
        )
        expected = records[-1].seq
        for _ in range(_TRIES):
            try:
                await self._client.append_durably(event, expected, patience=60)
            except ConflictError:  # another Notified, or the work moved on (re-queued, deleted)
                head = await self._client.head(work.id, work.pipeline)
                if head is None or isinstance(head.event, ev.Deleted) or not ev.is_final(head.event):
                    # a Notified follows only an ended work (so that its head still says how it ended)
                    log.warning("work %s moved on before its notification was recorded (sent: %s)",
                                work.id, outcome.ok)
                    return
                expected = head.seq
                continue
            if outcome.ok:
                log.info("work %s: notified of %s (%d attempt(s))", work.id, work.status, outcome.attempts)
            else:
                log.error("work %s: notification failed: %s", work.id, outcome.error)
            return
        log.error("work %s kept changing; its notification was sent but not recorded", work.id)

    # -- the notify pipeline -------------------------------------------------------------------

    async def _notify_pipeline(self) -> None:
        """Withdraw the works of the ``notify`` pipeline and send each (in its own task)."""
        while True:
            await self._free()
            try:
                work = await self._client.withdraw(nt.NOTIFY_PIPELINE, timeout=2, poll=0.5)
            except UNAVAILABLE as error:
                log.debug("withdraw from %s failed: %r", nt.NOTIFY_PIPELINE, error)
                await asyncio.sleep(1)
                continue
            if work is not None:
                self._spawn(self._send_message(work), f"message {work.id}")

    async def _send_message(self, work: Work) -> None:
        """A work of the ``notify`` pipeline: its message sent, and its outcome recorded."""
        if work.notify is None:
            await self._client.fail(work, "unrunnable", "a work of the notify pipeline needs notify.slack or "
                                    "notify.webhook: the message and where to send it", retry=False)
            return
        outcome = await deliver(self._targets(work, plain=True), self.settings)
        details: dict[str, Any] = {"attempts": outcome.attempts, "reply": outcome.reply}
        if outcome.ok:
            await self._client.succeed(work, details)
            log.info("message %s sent (%d attempt(s))", work.id, outcome.attempts)
        else:
            details["errors"] = outcome.errors
            await self._client.fail(work, "error", outcome.error, retry=False, results=details)
            log.error("message %s not sent: %s", work.id, outcome.error)


def _once(send: Any, *args: Any) -> Any:
    async def attempt() -> dict[str, Any]:
        answer: dict[str, Any] = await send(*args)
        return answer

    return attempt


async def _beat(msg: Msg) -> None:
    """Tell the server this event is still being handled, every third of the ack wait."""
    while True:
        await asyncio.sleep(ACK_WAIT / 3)
        with contextlib.suppress(Exception):
            await msg.in_progress()


async def _quietly(action: Any) -> None:
    with contextlib.suppress(Exception):
        await action


async def run_notifier(
    url: str, stop: asyncio.Event, *, settings: Settings | None = None, **connect_options: Any
) -> None:
    """Run a notifier until ``stop`` is set (``workflow server`` runs one); after a failure
    it starts again (:mod:`workflow.followers.restarts`): safe, since what it has not acked
    comes back, and what it recorded is not sent again."""
    settings = settings or Settings.from_env()
    sender = Sender(settings)
    try:
        async with Client(url, name=connect_options.pop("name", "workflow-notifier"), **connect_options) as client:
            await restarting("notifier", lambda: Notifier(client, settings, sender).run(stop), stop, log)
    finally:
        await sender.close()
