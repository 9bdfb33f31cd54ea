"""The client users hold: the log's client with the read model's questions attached.

``workflow.connect()`` returns this :class:`Client`. The log layer's client knows nothing
of the read model (it sits below it); this top-level module joins the two, so
``client.results.query(...)`` reads as one object while the layers stay one-way.
"""

from __future__ import annotations

from typing import Any

from workflow.core import session
from workflow.log import client as log_client
from workflow.results.client import Results


class Client(log_client.Client):
    """One connection to the workflow system: the log (deposit, withdraw, cancel, …)
    and the read model (``results``)."""

    @property
    def results(self) -> Results:
        """Queries over the projection (query, count, pipelines, get, history): the results service."""
        return Results(self)


def connect(url: str | None = None, **options: Any) -> Client:
    """A client to use as ``async with workflow.connect() as client:``.

    ``url`` defaults to ``WORKFLOW_NATS_URL``, else ``nats://127.0.0.1:4222``. Options:
    ``user``, ``password``, ``token``, ``nkeys_seed``, ``user_credentials`` (creds file),
    ``tls`` (an ``ssl.SSLContext``), ``name``, and ``lease`` (seconds; buckets created by
    this client get it as AckWait).
    """
    return Client(url, **options)


# The seed's shortcuts (`await work.deposit()`) open this client when none is bound.
session.install_factory(Client)
