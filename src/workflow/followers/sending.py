"""Sending a notification: Slack's ``chat.postMessage`` and the configured webhooks, over
HTTP (aiohttp), each target retried with backoff until it answers or the attempts run out.

The settings are the server's, from its environment (they can move into the workspace
configuration later):

- ``WORKFLOW_SLACK_TOKEN``, else the file ``WORKFLOW_SLACK_TOKEN_FILE``, else
  ``~/.config/workflow/slack-token``: the bot token (never in the log, never from a depositor);
- ``WORKFLOW_SLACK_API``: Slack's API base URL (default ``https://slack.com/api``; the tests
  point it at their local stand-in);
- ``WORKFLOW_WEBHOOKS``: ``key=url,key=url``, the only URLs a webhook may call;
- ``WORKFLOW_WEB_URL``: the web UI's page of a work (``…/works/{id}``, or a base URL), linked
  from each message;
- ``WORKFLOW_NOTIFY_ON``: the final statuses that send a work's notification when it does
  not say (default ``success,failure``);
- ``WORKFLOW_NOTIFY_ATTEMPTS`` (default 5) and ``WORKFLOW_NOTIFY_BACKOFF`` (seconds before the
  second try, doubled at each, at most 300; default 2).

A 429 answer's ``Retry-After`` is honoured: the next try waits at least that long. A 4xx
answer (other than 408 and 429), or Slack's ``ok: false`` with an error that trying again
cannot fix (``channel_not_found``, ``invalid_auth``…), is not tried again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from workflow.core.notify import DEFAULT_ON
from workflow.core.settings import webhooks

DEFAULT_SLACK_API = "https://slack.com/api"
MAX_BACKOFF = 300.0
#: Tries at most, whatever WORKFLOW_NOTIFY_ATTEMPTS says (each failed one is recorded).
MAX_ATTEMPTS = 20
#: Slack errors worth another try (any other ``ok: false`` is final).
SLACK_RETRYABLE = frozenset({"ratelimited", "internal_error", "fatal_error", "request_timeout",
                             "service_unavailable"})
#: How much of a webhook's answer, and of each error, the ``Notified`` event keeps (attempts
#: are few, so the event stays small).
ANSWER_LIMIT = 1000
ERROR_LIMIT = 300


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def slack_token() -> str | None:
    """The Slack bot token: the environment, else a credential file (first line)."""
    token = os.environ.get("WORKFLOW_SLACK_TOKEN")
    if token:
        return token.strip()
    path = os.environ.get("WORKFLOW_SLACK_TOKEN_FILE")
    candidate = Path(path) if path else Path.home() / ".config" / "workflow" / "slack-token"
    if candidate.is_file():
        lines = candidate.read_text().strip().splitlines()
        return lines[0].strip() if lines else None
    return None


@dataclass(frozen=True)
class Settings:
    """What the notifier needs to know (see the module's docstring)."""

    slack_api: str = DEFAULT_SLACK_API
    slack_token: str | None = None
    webhooks: dict[str, str] = field(default_factory=dict)
    web_url: str | None = None
    on: tuple[str, ...] = DEFAULT_ON
    attempts: int = 5
    backoff: float = 2.0
    http_timeout: float = 15.0

    @classmethod
    def from_env(cls) -> Settings:
        on = tuple(s.strip() for s in os.environ.get("WORKFLOW_NOTIFY_ON", "").split(",") if s.strip())
        return cls(
            slack_api=(os.environ.get("WORKFLOW_SLACK_API") or DEFAULT_SLACK_API).rstrip("/"),
            slack_token=slack_token(),
            webhooks=webhooks(),
            web_url=os.environ.get("WORKFLOW_WEB_URL") or None,
            on=on or DEFAULT_ON,
            attempts=min(MAX_ATTEMPTS, max(1, int(_number("WORKFLOW_NOTIFY_ATTEMPTS", 5)))),
            backoff=max(0.0, _number("WORKFLOW_NOTIFY_BACKOFF", 2.0)),
        )

    def pause(self, attempt: int) -> float:
        """Seconds before try ``attempt + 1``, after ``attempt`` failed ones."""
        return float(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF))


class SendError(Exception):
    """One try failed: ``retry_after`` (a 429's) bounds the next try from below;
    ``permanent`` says another try cannot help."""

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _refusal(response: aiohttp.ClientResponse, text: str) -> SendError | None:
    """The error an HTTP answer means (None for a 2xx)."""
    if 200 <= response.status < 300:
        return None
    message = f"HTTP {response.status}: {text[:200]}"
    if response.status == 429:
        return SendError(message, retry_after=_retry_after(response))
    return SendError(message, permanent=400 <= response.status < 500 and response.status != 408)


class Sender:
    """One HTTP session for every message of a notifier."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.http_timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def slack(self, body: dict[str, Any]) -> dict[str, Any]:
        """Post one message (``chat.postMessage``); Slack's answer, trimmed to what identifies it."""
        token = self.settings.slack_token
        if not token:
            raise SendError("no Slack token: set WORKFLOW_SLACK_TOKEN or WORKFLOW_SLACK_TOKEN_FILE on the server",
                            permanent=True)
        url = f"{self.settings.slack_api}/chat.postMessage"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"}
        try:
            async with self._http().post(url, json=body, headers=headers) as response:
                text = await response.text()
                refused = _refusal(response, text)
                if refused is not None:
                    raise refused
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    raise SendError(f"Slack answered with no JSON: {text[:200]}") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SendError(f"Slack unreachable: {error!r}") from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            code = str(answer.get("error")) if isinstance(answer, dict) else "not an object"
            raise SendError(f"Slack refused the message: {code}", permanent=code not in SLACK_RETRYABLE)
        return {key: answer[key] for key in ("ok", "channel", "ts", "warning") if key in answer}

    async def webhook(self, key: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """Call the webhook the configuration names ``key``; its status and answer (trimmed)."""
        url = self.settings.webhooks.get(key)
        if not url:
            raise SendError(f"no webhook {key!r} in this server's WORKFLOW_WEBHOOKS", permanent=True)
        try:
            async with self._http().request(method, url, json=body) as response:
                text = await response.text()
                refused = _refusal(response, text)
                if refused is not None:
                    raise refused
                return {"status": response.status, "answer": text[:ANSWER_LIMIT]}
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SendError(f"webhook {key!r} unreachable: {error!r}") from None


#: A target of one notification: its name (``slack:C123``, ``webhook:alerts``) and one try.
Target = tuple[str, Callable[[], Awaitable[dict[str, Any]]]]


@dataclass
class Outcome:
    """How a notification went: every target answered (``ok``), or why it was given up."""

    ok: bool
    attempts: int
    reply: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    error: str | None = None


async def deliver(
    targets: list[Target], settings: Settings, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
) -> Outcome:
    """Try every target until each answered, at most ``settings.attempts`` times; a target
    that answered is not tried again. Between tries: the backoff, or longer if a 429 said so."""
    pending = list(targets)
    given_up: list[str] = []
    outcome = Outcome(ok=False, attempts=0)
    for attempt in range(1, settings.attempts + 1):
        outcome.attempts = attempt
        retry_after = 0.0
        still: list[Target] = []
        for name, send in pending:
            try:
                outcome.reply[name] = await send()
            except SendError as error:
                outcome.errors.append(f"attempt {attempt}: {name}: {str(error)[:ERROR_LIMIT]}")
                if error.permanent:
                    given_up.append(f"{name}: {error} (not tried again)")
                    continue
                retry_after = max(retry_after, error.retry_after or 0.0)
                still.append((name, send))
        pending = still
        if not pending:
            break
        if attempt < settings.attempts:
            await sleep(max(settings.pause(attempt), retry_after))
    if pending:
        given_up.append(f"gave up after {settings.attempts} attempts: {outcome.errors[-1]}")
    outcome.ok = not given_up
    outcome.error = "; ".join(given_up) or None
    return outcome
