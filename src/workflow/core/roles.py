"""Who may do what, as NATS subject permissions: the roles ``workflow secure init`` writes.

NATS enforces these, not workflow: a connection logged in as ``viewer`` cannot publish an
event at all, whatever client it runs. Each role is a user in the server's
``authorization`` block with an allow-list for publish and subscribe (everything else is
denied). What the subjects are for:

- ``wf.<pipeline>.<work_id>.<event>``: the log's events. A deposit, and an operator's
  re-queue or re-prioritise, are both ``wf.<p>.<id>.queued.<site>.<priority>``: NATS sees
  subjects, not event types, so a depositor can also re-queue a work (put it in a bucket
  again, which is what a deposit does) but never cancel it, delete it or record an outcome.
  Bulk actions (``cancel``/``requeue``/``delete`` by filter) are one such event per work,
  so they need nothing more than the single ones: the operator's ``cancelled``,
  ``deleted`` and queue subjects, and reading the results service to select.
- ``wf._schedule.<name>.added|removed``: a schedule's events, an operator's to write;
  ``wfsched.>``: the NATS server's timers of the schedules and their firings (a stream of
  their own, ``WORKFLOW_SCHEDULES``), the server role's alone.
- ``wf._config.<name>.<event>``: a pipeline configuration's events, an operator's to write,
  with the waiting deposits of its runs (``wf.<pipeline>.<id>.waiting``).
- ``$JS.API.…``: JetStream requests (stream info, direct gets of a work's history, bucket
  consumers, pulls); ``$JS.ACK.WORKFLOW.>``: acks, naks, terms and heartbeats of held works;
  ``$JS.FC.>``: flow-control replies of the ordered consumers that read the log in order.
- ``workflow.results.>`` and ``$SRV.>``: the results service (``nats.micro``) and its discovery.
- ``_INBOX.>``: replies to every request (each role subscribes; only the service answers).

This module is pure: it renders text, the command writes the files.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from workflow.core.runs import CONFIG_EVENT_TYPES, CONFIG_PREFIX
from workflow.core.schedules import SCHEDULE_PREFIX, TIMER_PREFIX
from workflow.core.subjects import CLAIMS_BUCKET, PREFIX, STREAM

_API = "$JS.API"

#: What every role needs to look: the stream, works' histories, buckets, the results service,
#: the live events, and the replies to its own requests.
READ_PUBLISH: tuple[str, ...] = (
    f"{_API}.INFO",
    f"{_API}.STREAM.INFO.{STREAM}",
    f"{_API}.STREAM.MSG.GET.{STREAM}",
    f"{_API}.DIRECT.GET.{STREAM}",
    f"{_API}.DIRECT.GET.{STREAM}.>",
    f"{_API}.CONSUMER.INFO.{STREAM}.*",
    f"{_API}.CONSUMER.LIST.{STREAM}",
    f"{_API}.CONSUMER.NAMES.{STREAM}",
    f"{_API}.CONSUMER.CREATE.{STREAM}",  # an ephemeral ordered consumer (replay): no name, no durable
    "$JS.FC.>",
    "workflow.results.>",
)
READ_SUBSCRIBE: tuple[str, ...] = ("_INBOX.>", f"{PREFIX}.>")

#: A named (durable) bucket consumer: created by whoever first puts work in a bucket.
BUCKET_CREATE = f"{_API}.CONSUMER.CREATE.{STREAM}.*"
QUEUED = f"{PREFIX}.*.*.queued.>"
#: The heartbeats of filtered claims (a KV bucket): filtered workers write them, and every
#: worker reads them (a bucket worker checks a filter claim's before recovering its work).
CLAIM_HEARTBEATS = (
    f"$KV.{CLAIMS_BUCKET}.>",
    f"{_API}.STREAM.INFO.KV_{CLAIMS_BUCKET}",
    f"{_API}.STREAM.CREATE.KV_{CLAIMS_BUCKET}",
    f"{_API}.DIRECT.GET.KV_{CLAIMS_BUCKET}",
    f"{_API}.DIRECT.GET.KV_{CLAIMS_BUCKET}.>",
)
#: A schedule's events (``workflow.core.schedules``): an operator's to write.
SCHEDULE_EVENTS = (f"{SCHEDULE_PREFIX}.*.added", f"{SCHEDULE_PREFIX}.*.removed")
#: A pipeline configuration's events and its runs' works, which wait for each other
#: (``workflow.core.runs``): an operator deploys, stops, retries and removes them.
CONFIG_EVENTS = (*(f"{CONFIG_PREFIX}.*.{kind}" for kind in CONFIG_EVENT_TYPES), f"{PREFIX}.*.*.waiting")


@dataclass(frozen=True)
class Role:
    """One role: a NATS user and the subjects it may publish and subscribe to."""

    name: str
    summary: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...] = READ_SUBSCRIBE


ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        Role("server", "projector and results service: creates the stream, reads the log in order, answers queries",
             publish=(f"{_API}.>", "$JS.FC.>", "$JS.ACK.>", "_INBOX.>", "$SRV.>", "workflow.results.>",
                      f"{PREFIX}.>", f"{TIMER_PREFIX}.>"),
             subscribe=("_INBOX.>", f"{PREFIX}.>", "$SRV.>", "workflow.results.>")),
        Role("depositor", "deposit works, read",
             publish=(*READ_PUBLISH, BUCKET_CREATE, QUEUED, f"{PREFIX}.*.*.waiting")),
        Role("worker", "withdraw, heartbeat, record outcomes, read",
             publish=(*READ_PUBLISH, BUCKET_CREATE, f"{_API}.CONSUMER.MSG.NEXT.{STREAM}.*", f"$JS.ACK.{STREAM}.>",
                      f"{PREFIX}.*.*.started", f"{PREFIX}.*.*.succeeded", f"{PREFIX}.*.*.failed",
                      *CLAIM_HEARTBEATS)),
        Role("operator", "cancel, re-queue, re-prioritise, delete (one work or many), add and remove schedules, "
                         "deploy, stop, retry and remove pipeline configurations, read",
             publish=(*READ_PUBLISH, BUCKET_CREATE, QUEUED, f"{PREFIX}.*.*.cancelled", f"{PREFIX}.*.*.deleted",
                      *SCHEDULE_EVENTS, *CONFIG_EVENTS)),
        Role("viewer", "read only", publish=READ_PUBLISH),
    )
}


def new_password() -> str:
    """A random password (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def _quoted(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def authorization_block(passwords: Mapping[str, str]) -> str:
    """The ``authorization`` block of nats.conf: one user per role in ``passwords``."""
    lines = ["authorization {", "  users = ["]
    for name, password in passwords.items():
        role = ROLES[name]
        lines += [
            f"    # {name}: {role.summary}",
            f'    {{ user: "{name}", password: "{password}", permissions: {{',
            f"        publish: {{ allow: {_quoted(role.publish)} }}",
            f"        subscribe: {{ allow: {_quoted(role.subscribe)} }}",
            "    } }",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def secured_conf(base: str, passwords: Mapping[str, str]) -> str:
    """``base`` (the repository's nats.conf) with the roles' ``authorization`` block added."""
    header = (
        "\n# Roles written by `workflow secure init`: each role's password is in <role>.env\n"
        "# next to this file. Keep both readable by their owner only (mode 0600).\n"
    )
    return base.rstrip("\n") + "\n" + header + authorization_block(passwords)


def env_file(role: str, password: str) -> str:
    """The ``<role>.env`` file: what a process of that role reads (systemd's EnvironmentFile)."""
    return (
        f"# workflow role {role}: {ROLES[role].summary}\n"
        f"WORKFLOW_NATS_USER={role}\nWORKFLOW_NATS_PASSWORD={password}\n"
    )


def parse_env(text: str) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped, quotes removed)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values
