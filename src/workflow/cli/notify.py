"""``workflow notify test``: a test message through the server's notifier.

It deposits a work to the ``notify`` pipeline (a message to send, as in the system users
know) and waits for the server's notifier to send it: so it checks the whole path that
works' notifications take, with the server's token and settings, not this host's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Annotated, Any

import typer

import workflow
from workflow.cli.options import AsJson, Connection, connection_options
from workflow.cli.output import console, fail, print_json, with_client
from workflow.core.display import when
from workflow.core.notify import NOTIFY_PIPELINE, parse
from workflow.core.work import Work


@connection_options
def test(
    channel: Annotated[str | None, typer.Option("--channel", "-c", help="Slack channel id (C…) to post in.")] = None,
    member: Annotated[list[str] | None, typer.Option(
        "--member", "-m", help="Slack member id (U…), repeatable: mentioned in the channel, or messaged directly.",
    )] = None,
    webhook: Annotated[str | None, typer.Option(
        "--webhook", help="A webhook key of the server's WORKFLOW_WEBHOOKS to call as well.")] = None,
    message: Annotated[str | None, typer.Option(
        "--message", help="The text (default: says who tests, from where).")] = None,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the server to send it.", min=1)] = 60.0,
    as_json: AsJson = False,
    *,
    connection: Connection,
) -> None:
    """Send a test message through `workflow server`'s notifier, and say what Slack answered.

    Example: workflow notify test --channel C0123456789
    """
    text = message or f"workflow test message from {socket.gethostname()} at {when(time.time())}"
    notify: dict[str, Any] = {}
    if channel or member:
        notify["slack"] = {"channel_id": channel, "member_ids": member, "message": text}
    if webhook:
        notify["webhook"] = {"key": webhook, "body": {"text": text}}
    if not notify:
        raise fail("say where: --channel C…, --member U… or --webhook KEY", 2)

    async def send(client: workflow.Client) -> Work:
        [work_id] = await client.deposit(Work(pipeline=NOTIFY_PIPELINE, notify=parse(notify)))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            work = await client.get(work_id)
            if work.finished:
                return work
            await asyncio.sleep(0.25)
        return await client.get(work_id)

    work = with_client(connection, send)
    if as_json:
        print_json(work.payload)
    if not work.finished:
        raise fail(f"message {work.id} not sent within {wait:g} s: is `workflow server` (with its notifier) "
                   f"running? It stays queued in the {NOTIFY_PIPELINE} pipeline until one sends it", 1)
    results = work.results or {}
    if work.status != "success":
        raise fail(f"message {work.id} not sent: {results.get('error')}", 1)
    if not as_json:
        console.print(f"message {work.id} sent after {results.get('attempts')} attempt(s): "
                      f"{json.dumps(results.get('reply'))}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``notify test`` to the CLI."""
    notify_app = typer.Typer(help="Notifications sent by `workflow server` (Slack, webhooks).", no_args_is_help=True)
    notify_app.command("test")(test)
    app.add_typer(notify_app, name="notify")
