"""A work's ``notify``: whom to tell when it ends, and what the message says. Pure: no I/O.

The shape is the old system's (``notify.slack``), plus a generic webhook:

- ``slack``: ``channel_id`` and/or ``member_ids`` (with a channel, the members are
  mentioned in it; without one, each member gets the message directly), a ``message``,
  the flags ``results``, ``products`` and ``plots`` (include them), custom Block Kit
  ``blocks`` (sent as given), and ``reply`` (what Slack answered, kept as the old
  system kept it; the server records its answers in the ``Notified`` event).
- ``webhook``: a ``key`` naming a URL in the server's configuration (``WORKFLOW_WEBHOOKS``),
  never a URL: the server must not be made to call any address a depositor writes; a
  ``method`` and a JSON ``body`` template whose text values may say ``{id}``,
  ``{pipeline}``, ``{status}``, ``{user}``, ``{duration}``, ``{error}``, ``{link}``,
  ``{message}``.
- ``on``: the final statuses that send it (default: the server's, success and failure).

The messages are built here, from the work as folded, so the notifier (I/O) only sends
them. Every text that comes from a user (message, user, parameters, results, errors,
paths) is escaped for Slack (``&``, ``<``, ``>``): a ``<script>`` or a forged ``<!channel>``
arrives as text.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import msgspec

from workflow.core.errors import ValidationError

#: A webhook's key in the server's configuration: one name, as a pipeline's.
WebhookKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
#: The final statuses a notification may be sent on.
NotifyOn = Literal["success", "failure", "cancelled"]
DEFAULT_ON: tuple[str, ...] = ("success", "failure")
#: The pipeline whose works are messages to send (handled by the notifier, not by a worker).
NOTIFY_PIPELINE = "notify"
#: How much of the results (as JSON text) and of an error a message carries.
RESULTS_LIMIT = 1500
ERROR_LIMIT = 1000
#: Products and plots listed at most.
PATHS_LIMIT = 20


class Slack(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where and what to post on Slack (the old system's ``notify.slack``)."""

    channel_id: str | None = None
    member_ids: list[str] | None = None
    message: str | None = None
    results: bool = False
    products: bool = False
    plots: bool = False
    blocks: list[dict[str, Any]] | None = None
    reply: dict[str, Any] | None = None


class Webhook(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A call to a URL the server's configuration names by ``key``."""

    key: WebhookKey
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    body: dict[str, Any] | None = None


class Notify(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A work's ``notify``: Slack, a webhook, or both; ``on`` the final statuses that send it."""

    slack: Slack | None = None
    webhook: Webhook | None = None
    on: list[NotifyOn] | None = None


RULE = (
    "notify is None or {'slack': {...}, 'webhook': {...}, 'on': [...]}: slack has channel_id (text) and/or "
    "member_ids (a list of text), message (text), results/products/plots (true or false), blocks (a list of "
    "Slack blocks) and reply; webhook has key (a name in the server's WORKFLOW_WEBHOOKS, never a URL), "
    "method (POST, PUT or PATCH) and body (a JSON object); on lists success, failure, cancelled"
)

_KNOWN: dict[str, tuple[str, ...]] = {
    "notify": Notify.__struct_fields__, "slack": Slack.__struct_fields__, "webhook": Webhook.__struct_fields__,
}


def check_keys(value: Any) -> None:
    """Refuse (ValidationError) a key ``notify`` and its parts do not have: a misspelt
    ``chanel_id`` must not vanish on the way in, as a work's own fields do not."""
    if not isinstance(value, dict):
        return
    parts = [("notify", value)] + [(name, value.get(name)) for name in ("slack", "webhook")]
    for name, part in parts:
        if isinstance(part, dict):
            unknown = sorted(set(part) - set(_KNOWN[name]), key=str)
            if unknown:
                path = "notify" if name == "notify" else f"notify.{name}"
                raise ValidationError(
                    "notify", f"{path} has no field {', '.join(repr(u) for u in unknown)}; "
                    f"its fields are {', '.join(_KNOWN[name])}"
                )


def parse(value: Any) -> Notify | None:
    """``value`` (a Notify, its dict, or None) as a checked Notify; ValidationError otherwise."""
    if value is None or isinstance(value, Notify):
        notify = value
    else:
        check_keys(value)
        try:
            notify = msgspec.convert(value, type=Notify)
        except msgspec.ValidationError as error:
            where = re.sub(r" - at `\$\.?([^`]*)`", lambda m: " at notify" + ("." + m.group(1) if m.group(1) else ""),
                           str(error))
            raise ValidationError("notify", f"{RULE}; {where}") from None
    if notify is not None:
        check(notify)
    return notify


def check(notify: Notify) -> None:
    """Rules a type cannot say: something to send, and somewhere to send it."""
    if notify.slack is None and notify.webhook is None:
        raise ValidationError("notify", "notify needs slack or webhook (or both); " + RULE)
    if notify.slack is not None and not notify.slack.channel_id and not notify.slack.member_ids:
        raise ValidationError("notify", "notify.slack needs a channel_id or member_ids (or both)")


def check_webhook_key(notify: Notify | None, known: frozenset[str]) -> None:
    """Refuse a webhook key the configuration lacks (where a work enters the system)."""
    if notify is not None and notify.webhook is not None and notify.webhook.key not in known:
        listed = ", ".join(sorted(known)) or "none (set WORKFLOW_WEBHOOKS=key=url,... on the server)"
        raise ValidationError(
            "notify", f"unknown webhook key {notify.webhook.key!r}; the configured webhooks are: {listed}"
        )


def statuses(notify: Notify, default: tuple[str, ...] = DEFAULT_ON) -> frozenset[str]:
    """The final statuses on which ``notify`` is sent."""
    return frozenset(notify.on if notify.on is not None else default)


# -- the messages --------------------------------------------------------------------------


def escape(text: str) -> str:
    """``text`` as Slack shows it literally: its three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Facts(msgspec.Struct, kw_only=True, frozen=True):
    """What a message says about a work (from its fold), independent of where it goes."""

    work_id: str
    pipeline: str
    status: str
    user: str | None = None
    duration: float | None = None
    error: str | None = None
    results: dict[str, Any] | None = None
    products: list[str] | None = None
    plots: list[str] | None = None
    message: str | None = None
    link: str | None = None


def facts(work: Any, link: str | None = None) -> Facts:
    """The facts of a work (a folded ``Work``)."""
    results = work.results
    error = None
    if work.status == "failure" and isinstance(results, dict):
        error = str(results.get("error") or results.get("reason") or "failed")
        results = {k: v for k, v in results.items() if k not in ("error", "reason", "traceback")} or None
    duration = work.stop - work.start if work.start is not None and work.stop is not None else None
    slack = work.notify.slack if work.notify is not None else None
    return Facts(
        work_id=str(work.id), pipeline=work.pipeline, status=work.status, user=work.user, duration=duration,
        error=error, results=results, products=work.products, plots=work.plots,
        message=slack.message if slack is not None else None, link=link,
    )


def link_to(base: str | None, work_id: str) -> str | None:
    """The web UI's page of a work: ``base`` with ``{id}`` filled in, or ``base/works/ID``."""
    if not base:
        return None
    return base.replace("{id}", work_id) if "{id}" in base else f"{base.rstrip('/')}/works/{work_id}"


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def trimmed(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_ICONS = {"success": ":white_check_mark:", "failure": ":x:", "cancelled": ":no_entry_sign:"}


def slack_text(facts: Facts, slack: Slack) -> str:
    """The message's text (Slack mrkdwn), every user-written part escaped."""
    icon = _ICONS.get(facts.status, ":bell:")
    name = f"<{facts.link}|{escape(facts.work_id)}>" if facts.link else f"`{escape(facts.work_id)}`"
    lines = [f"{icon} *{escape(facts.pipeline)}* work {name}: *{escape(facts.status)}*"]
    if slack.channel_id and slack.member_ids:
        lines[0] = " ".join(f"<@{escape(m)}>" for m in slack.member_ids) + " " + lines[0]
    lines.append(f"user: {escape(facts.user or '-')} · duration: {duration_text(facts.duration)}")
    if facts.message:
        lines.append(escape(facts.message))
    if facts.error:
        lines.append("error: ```" + escape(trimmed(facts.error, ERROR_LIMIT)) + "```")
    if slack.results and facts.results:
        text = json.dumps(facts.results, default=str, ensure_ascii=False)
        lines.append("results: ```" + escape(trimmed(text, RESULTS_LIMIT)) + "```")
    for flag, label, paths in (("products", "products", facts.products), ("plots", "plots", facts.plots)):
        if getattr(slack, flag) and paths:
            shown = ", ".join(escape(str(p)) for p in paths[:PATHS_LIMIT])
            more = f" and {len(paths) - PATHS_LIMIT} more" if len(paths) > PATHS_LIMIT else ""
            lines.append(f"{label}: {shown}{more}")
    return "\n".join(lines)


def slack_messages(facts: Facts, slack: Slack, *, plain: bool = False) -> list[dict[str, Any]]:
    """The ``chat.postMessage`` bodies: one to the channel, or one to each member without one.
    ``plain``: the message alone (a work of the ``notify`` pipeline is a message, not news of a work)."""
    if plain:
        mentions = " ".join(f"<@{escape(m)}>" for m in slack.member_ids or []) if slack.channel_id else ""
        text = " ".join(part for part in (mentions, escape(facts.message or "(no message)")) if part)
    else:
        text = slack_text(facts, slack)
    blocks = slack.blocks if slack.blocks else [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    targets = [slack.channel_id] if slack.channel_id else list(slack.member_ids or [])
    return [{"channel": target, "text": text, "blocks": blocks} for target in targets]


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def webhook_body(facts: Facts, webhook: Webhook) -> dict[str, Any]:
    """The webhook's JSON body: its template with the placeholders filled in (only the
    known ones: a text is never formatted as code), or the facts when it has none."""
    values = {
        "id": facts.work_id, "pipeline": facts.pipeline, "status": facts.status, "user": facts.user or "",
        "duration": duration_text(facts.duration), "error": facts.error or "", "link": facts.link or "",
        "message": facts.message or "",
    }
    if webhook.body is None:
        body: dict[str, Any] = {**values, "duration": facts.duration}
        body["results"] = facts.results
        return body

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), value)
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value

    filled: dict[str, Any] = fill(webhook.body)
    return filled
