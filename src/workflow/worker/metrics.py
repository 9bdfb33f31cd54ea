"""What a worker (``workflow run --metrics-port N``) tells Prometheus.

The worker loop reports two things, each one call:

- :func:`observe_attempt` when an attempt ends: how long it took, per pipeline and
  outcome (``workflow_attempt_seconds``, a histogram whose ``_count`` counts attempts);
- :func:`slots` whenever its number of running works changes: busy and free slots
  (``workflow_worker_slots{state="busy"|"free"}``).

:func:`serve` exposes them, with the process's own CPU and memory, at ``/metrics``.
The calls cost a lock and an addition, and do nothing harmful when nobody serves them,
so the loop makes them unconditionally. Label values are bounded: a pipeline name and an
outcome from :data:`OUTCOMES`, never a work id.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    platform_collector,
    process_collector,
    start_http_server,
)

from workflow.core.errors import WorkflowError

log = logging.getLogger("workflow.metrics")
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series (half the lines)

#: Attempts run from milliseconds (``add``) to days (a work's timeout is at most three).
ATTEMPT_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200,
)

#: The loop's words for how an attempt ended, as label values (anything else: ``other``).
OUTCOMES = {
    "success": "success",
    "failed": "failed",
    "failed, will retry": "retrying",
    "too-large": "too_large",
    "archive": "archive",
    "archive, will retry": "retrying",
    "unrunnable": "unrunnable",
    "timeout": "timeout",
    "timeout, will retry": "timeout",
    "cancelled": "cancelled",
    "abandoned": "abandoned",
    "given back": "given_back",
    "conflict": "conflict",
    "unrecorded": "unrecorded",
}

#: The worker's own registry (not prometheus_client's global one): what it serves is
#: exactly what this module declares, plus the process collectors.
REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

ATTEMPT_SECONDS = Histogram(
    "workflow_attempt_seconds",
    "Duration of the attempts this worker ran, from withdraw to recorded outcome.",
    ["pipeline", "outcome"],
    buckets=ATTEMPT_BUCKETS,
    registry=REGISTRY,
)
SLOTS = Gauge(
    "workflow_worker_slots",
    "This worker's slots (--concurrency): busy running a work, or free.",
    ["state"],
    registry=REGISTRY,
)


def outcome_label(outcome: str) -> str:
    """The bounded label value for one of the loop's outcome words."""
    return OUTCOMES.get(outcome, "other")


def observe_attempt(pipeline: str, outcome: str, seconds: float) -> None:
    """Count one finished attempt of ``pipeline`` that took ``seconds``."""
    _attempt_histogram(pipeline, outcome_label(outcome)).observe(max(seconds, 0.0))


@functools.lru_cache(maxsize=1024)  # bounded: pipelines x outcomes, and a cap for safety
def _attempt_histogram(pipeline: str, outcome: str) -> Any:
    return ATTEMPT_SECONDS.labels(pipeline=pipeline, outcome=outcome)


_BUSY = SLOTS.labels(state="busy")  # bound once: .labels() on every change was a hot spot
_FREE = SLOTS.labels(state="free")


def slots(busy: int, free: int) -> None:
    """Say how many of the worker's slots run a work now, and how many are free."""
    _BUSY.set(busy)
    _FREE.set(max(free, 0))


def serve(port: int, host: str = "0.0.0.0") -> Any:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; port 0 picks a free one.

    Returns the HTTP server (its ``server_port`` is the port bound; ``shutdown()`` stops it).
    """
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as error:
        raise WorkflowError(f"cannot serve metrics on {host}:{port}: {error}") from None
    log.info("metrics on http://%s:%d/metrics", host, server.server_port, extra={"metrics_port": server.server_port})
    return server
