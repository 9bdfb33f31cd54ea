"""Where things live on NATS: subjects of the log, names of buckets, service names.

Every event of a work is published under ``wf.<pipeline>.<work_id>.``; the event that
puts a work in a bucket goes to ``wf.<pipeline>.<work_id>.queued.<site>.<priority>``,
so a bucket is simply a consumer filtered on ``wf.<pipeline>.*.queued.<site>.<priority>``.
A deposit that waits (precursors, a delay) goes to ``wf.<pipeline>.<work_id>.waiting``
instead: no bucket sees it until the resolver's ``Requeued`` puts it on a queue subject.
Pipelines and sites are validated to letters, digits and ``-``: always one subject token.
"""

from __future__ import annotations

from typing import NamedTuple

from workflow.core.events import Deposited, Event, Requeued

STREAM = "WORKFLOW"
PREFIX = "wf"
#: The key-value bucket of filtered claims' heartbeats (``workflow.log.claimer_keys``).
CLAIMS_BUCKET = "workflow-claims"
#: Where a client asks the server to create a bucket (``workflow.followers.bucket_keeper``): only
#: the server role may create consumers, since creating one is also updating it.
BUCKET_REQUESTS = "workflow.buckets.create"


class BucketKey(NamedTuple):
    """One bucket: the works of one pipeline, for one site, at one priority."""

    pipeline: str
    site: str
    priority: int

    @property
    def consumer(self) -> str:
        """Durable consumer name (``.``, ``*`` and ``>`` are not allowed in names)."""
        return f"bucket_{self.pipeline}_{self.site}_{self.priority}"

    @property
    def filter_subject(self) -> str:
        return f"{PREFIX}.{self.pipeline}.*.queued.{self.site}.{self.priority}"


def event_subject(event: Event) -> str:
    """The subject an event is published on."""
    base = f"{PREFIX}.{event.pipeline}.{event.work_id}"
    if isinstance(event, Deposited) and event.waits is not None:  # in no bucket until released
        return f"{base}.waiting"
    if isinstance(event, (Deposited, Requeued)):  # the events that put a work in a bucket
        return f"{base}.queued.{event.work.site}.{event.work.priority}"
    return f"{base}.{type(event).__name__.lower()}"


def work_id_of(subject: str) -> str | None:
    """The work id in a work event's subject (``wf.<pipeline>.<id>.<event>…``), None if the
    subject is not one (a schedule's, or junk)."""
    parts = subject.split(".", 3)
    if len(parts) < 4 or parts[0] != PREFIX or not parts[2] or parts[1].startswith("_"):
        return None
    return parts[2]


def work_filter(work_id: str, pipeline: str | None = None) -> str:
    """The subject filter matching every event of one work."""
    return f"{PREFIX}.{pipeline or '*'}.{work_id}.>"


def bucket_from_filter(filter_subject: str) -> BucketKey | None:
    """Parse a bucket consumer's filter subject back to its key (None if not a bucket)."""
    parts = filter_subject.split(".")
    if len(parts) != 6 or parts[0] != PREFIX or parts[2] != "*" or parts[3] != "queued":
        return None
    try:
        return BucketKey(parts[1], parts[4], int(parts[5]))
    except ValueError:
        return None
