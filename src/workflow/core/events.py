"""The events: one frozen Struct per lifecycle change of a work, past tense.

Every change is one event in the log, and the log alone explains everything: time,
host, worker, attempt and the queue message an attempt came from travel in the event.
Events are a tagged union (``"type"``), JSON on the wire (readable with the ``nats``
CLI), and carry a schema version ``v`` so that an event written today still decodes
in ten years: new fields get defaults, fields are never renamed or removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

import msgspec

from workflow.core.errors import PayloadTooLargeError, ValidationError
from workflow.core.ids import new_id
from workflow.core.products import ArchivedFile
from workflow.core.work import Work

SCHEMA_VERSION = 1
#: A schema version: 1 up to ``SCHEMA_VERSION``. A greater one is refused by ``decode``
#: (checked there, not here, so the message can say why).
Version = Annotated[int, msgspec.Meta(ge=1)]
#: An attempt number. Bounded so that every reader (DuckDB's INTEGER, Arrow's int32) can
#: hold it: a hostile event must be refused at decoding, not crash a writer later.
Attempt = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
#: A stream sequence (DuckDB's BIGINT).
Sequence = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

#: Why an attempt failed.
FailureReason = Literal[
    "error",        # the function raised, or the command exited non-zero
    "timeout",      # it ran past the work's own timeout and was stopped
    "lost",         # its worker vanished (no heartbeat within the lease)
    "interrupted",  # its worker was told to stop at once and gave the work back
    "too-large",    # its results were larger than the log accepts
    "unrunnable",   # nothing to run: unknown function, or neither function nor command
    "reported",     # recorded by hand through ``client.update`` with status failure
    "archive",      # its returned products/plots could not be archived (retried like ``lost``)
]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=str.lower):
    """Fields common to every event."""

    work_id: str
    pipeline: str
    time: float
    id: str = msgspec.field(default_factory=new_id)
    by: str | None = None
    v: Version = SCHEMA_VERSION


class Waits(msgspec.Struct, frozen=True, kw_only=True):
    """What a work waits for before it enters its bucket: every precursor (a work id) to
    succeed, and the time ``not_before`` (unix seconds) to pass. Either may be empty.

    ``when`` is the rule (:mod:`workflow.core.waits`): ``success`` (the default, and what
    events written before it mean), or ``failure``/``always``, which wait for every precursor
    to *finish* and then run if one did not succeed, or whatever the outcomes."""

    precursors: list[str] = msgspec.field(default_factory=list)
    not_before: float | None = None
    when: Literal["success", "failure", "always"] = "success"


class Deposited(Event, frozen=True, kw_only=True):
    """A work entered the system; it carries the whole work and puts it in its bucket.

    With ``waits``, it is published off the queue subjects instead (no bucket sees it), and
    the work is ``waiting`` until the resolver releases it with a ``Requeued`` or cancels it.
    """

    work: Work
    waits: Waits | None = None


class Requeued(Event, frozen=True, kw_only=True):
    """A work was put in a bucket again (re-prioritised, moved, or retried by hand)."""

    work: Work
    reason: str | None = None


#: How a work was claimed: by a bucket delivering its queue message to a worker, or by a
#: filtered withdraw (``workflow run --tag T``) that found it in the read model and claimed
#: its queue message without holding it (the bucket keeps that message as the watchdog).
ClaimedVia = Literal["bucket", "filter"]


class Started(Event, frozen=True, kw_only=True):
    """A worker began an attempt. ``queue_seq`` is the queue message it came from;
    ``via`` says how it was claimed (events written before filters read as ``bucket``)."""

    attempt: Attempt
    queue_seq: Sequence
    host: str | None = None
    via: ClaimedVia = "bucket"


class Succeeded(Event, frozen=True, kw_only=True):
    """An attempt finished well; its results are the work's results.

    ``archived`` records every product and plot the attempt's function returned (name,
    original path, archived URI, size, sha256); ``products``/``plots`` are then their URIs.
    Events written before archiving have none (None)."""

    attempt: Attempt
    results: dict[str, Any] | None = None
    products: list[str] | None = None
    plots: list[str] | None = None
    archived: list[ArchivedFile] | None = None


class Failed(Event, frozen=True, kw_only=True):
    """An attempt failed. With ``will_retry`` the work goes back to its bucket after
    ``retry_in`` seconds; without, the work has failed for good. ``archived`` as for
    :class:`Succeeded` (a failed function's files are archived too)."""

    attempt: Attempt
    reason: FailureReason
    will_retry: bool
    queue_seq: Sequence | None = None
    error: str | None = None
    traceback: str | None = None
    retry_in: float | None = None
    results: dict[str, Any] | None = None
    products: list[str] | None = None
    plots: list[str] | None = None
    archived: list[ArchivedFile] | None = None


class Cancelled(Event, frozen=True, kw_only=True):
    """Someone cancelled the work: it will not run (again)."""

    reason: str | None = None


class Deleted(Event, frozen=True, kw_only=True):
    """Someone deleted a finished work: lists and counts hide it from now on, and nothing
    may follow. The log is immutable, so this is a fact added, not a history removed: the
    work's events stay for audits (``workflow history``), and ``show`` says it is deleted.
    Only a finished work (success, failure, cancelled) may be deleted; a delete of one still
    waiting, queued or running is a ``Cancelled`` first (:mod:`workflow.core.bulk`).
    ``products_removed``: the archived files removed with it (``workflow delete --products``)."""

    reason: str | None = None
    products_removed: list[str] | None = None


class Notified(Event, frozen=True, kw_only=True):
    """The work's ``notify`` was sent (``ok``), or given up after ``attempts`` tries.

    Written once per final outcome by the server's notifier, under the work's CAS, while
    the work is still in that outcome (the fold refuses it of a work that has not ended),
    and it does not change the work's status: ``status`` is that final status, so a reader
    of a work's head alone knows the work's status from it too; ``reply``
    what each target answered (``{"slack": [...], "webhook": {...}}``); ``errors`` what each
    failed try met, in order; ``error`` why it was given up (None when ``ok``).
    """

    status: str
    ok: bool
    attempts: Attempt
    reply: dict[str, Any] | None = None
    errors: list[str] | None = None
    error: str | None = None


AnyEvent = Deposited | Requeued | Started | Succeeded | Failed | Cancelled | Deleted | Notified

#: Every event class, in the union's order: the one list that display, projection, metrics
#: and audit derive theirs from, so a new event that one of them forgets fails a test at once.
EVENT_CLASSES: tuple[type[Event], ...] = get_args(AnyEvent)
#: Their tags (``"deposited"``, ...): the ``type`` field on the wire and the event's name in subjects.
EVENT_TYPES: tuple[str, ...] = tuple(str(cls.__struct_config__.tag) for cls in EVENT_CLASSES)

_encoder = msgspec.json.Encoder()


def encode(event: Event, limit: int | None = None) -> bytes:
    """JSON bytes of ``event``; refuses (never truncates) one over ``limit`` bytes."""
    data = _encoder.encode(event)
    if limit is not None and len(data) > limit:
        raise PayloadTooLargeError(
            f"{type(event).__name__} event of work {event.work_id} is {len(data):,} bytes; "
            f"the server accepts at most {limit:,} bytes per message"
        )
    return data


def decoder_of(union: Any, what: str) -> Callable[[bytes], Any]:
    """The decoder of one family of log messages (a work's events, a schedule's, a pipeline
    configuration's): the ``union``'s member the bytes encode, or ValidationError naming
    ``what`` for anything else, never another exception (the log is open to any client
    allowed to publish, so its readers must be able to refuse what they meet). A newer
    schema version is refused too (``v``), not guessed at: a field this code does not know
    may change what the message means."""
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(union)

    def decode(data: bytes) -> Any:
        try:
            message = decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as error:  # msgspec lets invalid UTF-8 through as this
            raise ValidationError(what, str(error)) from None
        check_version(message.v)
        return message

    return decode


_decode_event = decoder_of(AnyEvent, "event")


def decode(data: bytes) -> AnyEvent:
    """The event encoded in ``data`` (any schema version this code knows); ValidationError
    for anything else (:func:`decoder_of`)."""
    event: AnyEvent = _decode_event(data)
    return event


def check_version(v: int) -> None:
    """Refuse (ValidationError) a schema version newer than this code's."""
    if v > SCHEMA_VERSION:
        raise ValidationError(
            "v", f"schema version {v} is newer than this code knows ({SCHEMA_VERSION}): refused, not guessed at; "
                 "upgrade workflow to read it"
        )


def is_final(event: Event) -> bool:
    """True when, after this event, the work will never run again (a ``Notified`` follows
    only a work that ended: the fold refuses it otherwise)."""
    return isinstance(event, (Succeeded, Cancelled, Deleted, Notified)) or (
        isinstance(event, Failed) and not event.will_retry
    )
