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
- ``$JS.API.…``: JetStream requests. Every role reads (stream info, direct gets of a work's
  history, bucket info); a worker pulls from buckets. Only the server creates, updates or
  deletes streams and consumers: a consumer's ``CONSUMER.CREATE`` is also its *update*,
  so a role allowed to create a bucket could rewrite every bucket's lease (``ack_wait``)
  and ``max_deliver``. A client that needs a new bucket asks the server for it
  (``workflow.buckets.create``, :mod:`workflow.followers.bucket_keeper`), which creates it and
  never changes one that exists. :data:`JETSTREAM_ACTIONS` lists what each role may do in
  the JetStream API (the table of docs/howto/roles.md is generated from it).
  ``$JS.ACK.WORKFLOW.>``: acks, naks, terms and heartbeats of held works;
  ``$JS.FC.>``: flow-control replies of the ordered consumers that read the log in order
  (the server's: the projector, the resolver, the scheduler, the metrics).
- ``workflow.results.>`` and ``$SRV.>``: the results service (``nats.micro``) and its discovery.
- ``$O.PRODUCTS.>`` and ``$JS.API.…OBJ_PRODUCTS``: the products object store. Every role
  reads it (``workflow products get``); workers write it (their attempts' products), and
  operators remove from it (``workflow delete --products``).
- ``_INBOX.>``: replies to every request (each role subscribes; only the service answers).

This module is pure: it renders text, the command writes the files.
nats.conf holds bcrypt hashes of the passwords (:func:`password_hash`), never the passwords.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import bcrypt

from workflow.core.archiving import DEFAULT_BUCKET
from workflow.core.runs import CONFIG_EVENT_TYPES, CONFIG_PREFIX
from workflow.core.schedules import SCHEDULE_PREFIX, TIMER_PREFIX
from workflow.core.subjects import BUCKET_REQUESTS, CLAIMS_BUCKET, PREFIX, STREAM

_API = "$JS.API"

#: The products object store (``workflow.archive.objectstore``), read by every role: its
#: stream's info, an object's metadata (direct or stream gets) and an ordered consumer on
#: its chunks (delivered to an ``_INBOX``, flow control on ``$JS.FC.>``).
_PRODUCTS = f"OBJ_{DEFAULT_BUCKET}"
PRODUCTS_READ = (
    f"{_API}.STREAM.INFO.{_PRODUCTS}",
    f"{_API}.STREAM.MSG.GET.{_PRODUCTS}",
    f"{_API}.DIRECT.GET.{_PRODUCTS}",
    f"{_API}.DIRECT.GET.{_PRODUCTS}.>",
    f"{_API}.CONSUMER.CREATE.{_PRODUCTS}",
    f"{_API}.CONSUMER.CREATE.{_PRODUCTS}.>",
    f"{_API}.CONSUMER.DELETE.{_PRODUCTS}.>",
)
#: Writing products: a worker's chunks and metadata, and the purge of a failed upload's
#: chunks or a removed object's (an operator's ``delete --products`` needs the same).
PRODUCTS_WRITE = (f"$O.{DEFAULT_BUCKET}.C.>", f"$O.{DEFAULT_BUCKET}.M.>", f"{_API}.STREAM.PURGE.{_PRODUCTS}")

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
    "workflow.results.>",
    *PRODUCTS_READ,
)
READ_SUBSCRIBE: tuple[str, ...] = ("_INBOX.>", f"{PREFIX}.>")

#: Asking the server for a bucket (:mod:`workflow.followers.bucket_keeper`): whoever puts work in
#: a bucket, or withdraws from one at a given site, may need it to exist.
BUCKET_CREATE = BUCKET_REQUESTS
QUEUED = f"{PREFIX}.*.*.queued.>"
#: The heartbeats of filtered claims (a KV bucket): filtered workers write them, and every
#: worker reads them (a bucket worker checks a filter claim's before recovering its work).
CLAIM_HEARTBEATS = (
    f"$KV.{CLAIMS_BUCKET}.>",
    f"{_API}.STREAM.INFO.KV_{CLAIMS_BUCKET}",
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
                      f"{PREFIX}.>", f"{TIMER_PREFIX}.>", BUCKET_REQUESTS),
             subscribe=("_INBOX.>", f"{PREFIX}.>", "$SRV.>", "workflow.results.>", BUCKET_REQUESTS)),
        Role("depositor", "deposit works, read",
             publish=(*READ_PUBLISH, BUCKET_CREATE, QUEUED, f"{PREFIX}.*.*.waiting")),
        Role("worker", "withdraw, heartbeat, record outcomes, read",
             publish=(*READ_PUBLISH, BUCKET_CREATE, f"{_API}.CONSUMER.MSG.NEXT.{STREAM}.*", f"$JS.ACK.{STREAM}.>",
                      f"{PREFIX}.*.*.started", f"{PREFIX}.*.*.succeeded", f"{PREFIX}.*.*.failed",
                      *CLAIM_HEARTBEATS, *PRODUCTS_WRITE)),
        Role("operator", "cancel, re-queue, re-prioritise, delete (one work or many), add and remove schedules, "
                         "deploy, stop, retry and remove pipeline configurations, read",
             publish=(*READ_PUBLISH, BUCKET_CREATE, QUEUED, f"{PREFIX}.*.*.cancelled", f"{PREFIX}.*.*.deleted",
                      *SCHEDULE_EVENTS, *CONFIG_EVENTS, *PRODUCTS_WRITE)),
        Role("viewer", "read only", publish=READ_PUBLISH),
    )
}


def new_password() -> str:
    """A random password (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


#: bcrypt's work factor for the hashes in nats.conf. nats-server checks the hash at every
#: login, so the cost is paid by each connection (a worker's, a CLI command's); the
#: passwords are 192 random bits, which no work factor needs to slow a guesser down on,
#: so the hash is there to keep the secret out of the file, not to stretch a weak one.
BCRYPT_COST = 10


def password_hash(password: str) -> str:
    """The bcrypt hash nats-server accepts in place of a password (``$2b$10$…``)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()


def _quoted(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def authorization_block(hashes: Mapping[str, str]) -> str:
    """The ``authorization`` block of nats.conf: one user per role in ``hashes`` (the
    bcrypt hash of each role's password, :func:`password_hash`)."""
    lines = ["authorization {", "  users = ["]
    for name, hashed in hashes.items():
        role = ROLES[name]
        lines += [
            f"    # {name}: {role.summary}",
            f'    {{ user: "{name}", password: "{hashed}", permissions: {{',
            f"        publish: {{ allow: {_quoted(role.publish)} }}",
            f"        subscribe: {{ allow: {_quoted(role.subscribe)} }}",
            "    } }",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def secured_conf(base: str, hashes: Mapping[str, str]) -> str:
    """``base`` (the repository's nats.conf) with the roles' ``authorization`` block added
    (``hashes``: each role's bcrypt password hash)."""
    header = (
        "\n# Roles written by `workflow secure init`: each role's password is in <role>.env\n"
        "# next to this file (here only its bcrypt hash). Keep both readable by their owner only.\n"
    )
    return base.rstrip("\n") + "\n" + header + authorization_block(hashes)


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


# -- what each role may do in the JetStream API ---------------------------------------------


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether NATS's ``pattern`` (``*`` one token, ``>`` one or more at the end) covers ``subject``."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


def may_publish(role: str, subject: str) -> bool:
    """Whether the role's allow-list lets it publish to ``subject`` (NATS denies the rest)."""
    return any(subject_matches(pattern, subject) for pattern in ROLES[role].publish)


@dataclass(frozen=True)
class JetStreamAction:
    """One request of the JetStream API, on workflow's own streams and consumers."""

    label: str
    subject: str


#: A bucket, as the table and the roles' test name one.
SAMPLE_BUCKET = "bucket_sample-pipeline_local_3"
_KV = f"KV_{CLAIMS_BUCKET}"
_TIMERS = "WORKFLOW_SCHEDULES"  # workflow.log.schedules.TIMER_STREAM (the log layer names it)

#: Every JetStream API request a role could make on workflow's streams and consumers (each
#: subject nats-server 2.11+ answers under ``$JS.API``, made concrete), and so every way a
#: role could misuse it: the roles' test asks the server each one as each role, and
#: docs/howto/roles.md's table is :func:`actions_table`.
JETSTREAM_ACTIONS: tuple[JetStreamAction, ...] = tuple(JetStreamAction(label, f"{_API}.{rest}") for label, rest in (
    ("account info (JetStream limits and usage)", "INFO"),
    ("stream info of the log", f"STREAM.INFO.{STREAM}"),
    ("read an event by sequence", f"STREAM.MSG.GET.{STREAM}"),
    ("direct get of an event", f"DIRECT.GET.{STREAM}"),
    ("direct get of a work's last event", f"DIRECT.GET.{STREAM}.wf.sample-pipeline.01ABC.started"),
    ("list the buckets", f"CONSUMER.LIST.{STREAM}"),
    ("names of the buckets", f"CONSUMER.NAMES.{STREAM}"),
    ("bucket info", f"CONSUMER.INFO.{STREAM}.{SAMPLE_BUCKET}"),
    ("pull works from a bucket", f"CONSUMER.MSG.NEXT.{STREAM}.{SAMPLE_BUCKET}"),
    ("read a claim heartbeat", f"DIRECT.GET.{_KV}"),
    ("read a claim heartbeat by key", f"DIRECT.GET.{_KV}.$KV.{CLAIMS_BUCKET}.01ABC"),
    ("claim heartbeat bucket info", f"STREAM.INFO.{_KV}"),
    ("create or update a bucket", f"CONSUMER.CREATE.{STREAM}.{SAMPLE_BUCKET}"),
    ("create or update a bucket (with a filter)",
     f"CONSUMER.CREATE.{STREAM}.{SAMPLE_BUCKET}.wf.sample-pipeline.01ABC.queued.local.3"),
    ("create or update a durable consumer (old API)", f"CONSUMER.DURABLE.CREATE.{STREAM}.{SAMPLE_BUCKET}"),
    ("create a new consumer", f"CONSUMER.CREATE.{STREAM}.intruder"),
    ("create an ephemeral consumer", f"CONSUMER.CREATE.{STREAM}"),
    ("delete a bucket", f"CONSUMER.DELETE.{STREAM}.{SAMPLE_BUCKET}"),
    ("pause a bucket", f"CONSUMER.PAUSE.{STREAM}.{SAMPLE_BUCKET}"),
    ("unpin a bucket's pinned client", f"CONSUMER.UNPIN.{STREAM}.{SAMPLE_BUCKET}"),
    ("reset a bucket's position", f"CONSUMER.RESET.{STREAM}.{SAMPLE_BUCKET}"),
    ("move a bucket's leader", f"CONSUMER.LEADER.STEPDOWN.{STREAM}.{SAMPLE_BUCKET}"),
    ("remove a bucket's peer", f"CONSUMER.PEER.REMOVE.{STREAM}.{SAMPLE_BUCKET}"),
    ("evacuate a bucket's peer", f"CONSUMER.PEER.EVACUATE.{STREAM}.{SAMPLE_BUCKET}"),
    ("create the log", f"STREAM.CREATE.{STREAM}"),
    ("update the log", f"STREAM.UPDATE.{STREAM}"),
    ("delete the log", f"STREAM.DELETE.{STREAM}"),
    ("purge the log", f"STREAM.PURGE.{STREAM}"),
    ("delete an event", f"STREAM.MSG.DELETE.{STREAM}"),
    ("snapshot the log", f"STREAM.SNAPSHOT.{STREAM}"),
    ("restore the log", f"STREAM.RESTORE.{STREAM}"),
    ("move the log's leader", f"STREAM.LEADER.STEPDOWN.{STREAM}"),
    ("remove a peer of the log", f"STREAM.PEER.REMOVE.{STREAM}"),
    ("evacuate a peer of the log", f"STREAM.PEER.EVACUATE.{STREAM}"),
    ("cancel a move of the log", f"STREAM.CANCEL_MOVE.{STREAM}"),
    ("create the claim heartbeat bucket", f"STREAM.CREATE.{_KV}"),
    ("update the claim heartbeat bucket", f"STREAM.UPDATE.{_KV}"),
    ("delete the claim heartbeat bucket", f"STREAM.DELETE.{_KV}"),
    ("purge the claim heartbeat bucket", f"STREAM.PURGE.{_KV}"),
    ("update the schedules' timers", f"STREAM.UPDATE.{_TIMERS}"),
    ("delete the schedules' timers", f"STREAM.DELETE.{_TIMERS}"),
    ("products store info", f"STREAM.INFO.{_PRODUCTS}"),
    ("read a product's chunk by sequence", f"STREAM.MSG.GET.{_PRODUCTS}"),
    ("direct get in the products store", f"DIRECT.GET.{_PRODUCTS}"),
    ("direct get of a product's metadata", f"DIRECT.GET.{_PRODUCTS}.$O.{DEFAULT_BUCKET}.M.Y2FuZGlkYXRl"),
    ("read a product's chunks (ordered consumer)", f"CONSUMER.CREATE.{_PRODUCTS}"),
    ("read a product's chunks (filtered)", f"CONSUMER.CREATE.{_PRODUCTS}.reader.$O.{DEFAULT_BUCKET}.C.abc"),
    ("stop reading a product", f"CONSUMER.DELETE.{_PRODUCTS}.reader"),
    ("remove products' chunks", f"STREAM.PURGE.{_PRODUCTS}"),
    ("update the products store", f"STREAM.UPDATE.{_PRODUCTS}"),
    ("delete the products store", f"STREAM.DELETE.{_PRODUCTS}"),
    ("names of the streams", "STREAM.NAMES"),
    ("list the streams", "STREAM.LIST"),
    ("purge the account", "ACCOUNT.PURGE.workflow"),
    ("move the log to other servers", f"ACCOUNT.STREAM.MOVE.{STREAM}.workflow"),
    ("cancel that move", f"ACCOUNT.STREAM.CANCEL_MOVE.{STREAM}.workflow"),
    ("move the cluster's meta leader", "META.LEADER.STEPDOWN"),
    ("rescue the cluster's meta state", "META.RESCUE"),
    ("remove a server from the cluster", "SERVER.REMOVE"),
    ("evacuate a server", "SERVER.EVACUATE"),
))


def actions_table() -> str:
    """docs/howto/roles.md's table: each JetStream action, allowed or refused to each role."""
    names = list(ROLES)
    lines = [
        "| JetStream API request | subject | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for action in JETSTREAM_ACTIONS:
        cells = ("allowed" if may_publish(name, action.subject) else "refused" for name in names)
        lines.append(f"| {action.label} | `{action.subject}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
