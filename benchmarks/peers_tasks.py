"""The no-op task of ``benchmarks/peers.py``, declared once for each peer.

Every system runs the same body, ``add(a, b) -> a + b``, and stores its return value:

* Dramatiq: ``dramatiq_add`` (actor ``add``) on a Redis broker, ``store_results=True`` with
  the Results middleware on a Redis backend. Worker: ``dramatiq peers_tasks:broker``.
* Celery: ``celery_add`` (task ``add``) with a Redis broker and the Redis result backend.
  Worker: ``celery -A peers_tasks:celery_app worker``.
* RQ: the plain function ``add`` (RQ stores every return value). Worker: ``rq worker``.

The Redis URL comes from ``PEERS_REDIS_URL``, which ``peers.py`` sets (for itself and for
the workers it starts) before importing this module.
"""

from __future__ import annotations

import os
from typing import Any

REDIS_URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench"


def add(a: int, b: int) -> int:
    """The task: a no-op that returns a + b."""
    return a + b


# Dramatiq and Celery are set up on first use of their names (PEP 562), not at import: RQ's
# forking worker imports this module in every work horse, and importing both frameworks there
# would bill RQ some 150 ms per job for code it never uses.


def _dramatiq() -> dict[str, Any]:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    backend = RedisBackend(url=REDIS_URL)
    broker = RedisBroker(url=REDIS_URL)  # type: ignore[no-untyped-call]
    broker.add_middleware(Results(backend=backend))  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)
    actor = dramatiq.actor(actor_name="add", queue_name=QUEUE, store_results=True)(add)
    return {"broker": broker, "dramatiq_backend": backend, "dramatiq_add": actor}


def _celery() -> dict[str, Any]:
    from celery import Celery

    app = Celery("peers_tasks", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    return {"celery_app": app, "celery_add": app.task(name="add")(add)}


_LAZY = {"broker": _dramatiq, "dramatiq_backend": _dramatiq, "dramatiq_add": _dramatiq,
         "celery_app": _celery, "celery_add": _celery}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals().update(_LAZY[name]())
    return globals()[name]
