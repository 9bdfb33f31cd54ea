"""workflow: the CHIME/FRB bookkeeping and work-queue system, event-sourced on NATS JetStream.

    import workflow
    async with workflow.connect() as client:
        [work_id] = await client.deposit(workflow.Work(pipeline="sample-pipeline", parameters={"a": 1}))

The names below load on first use (PEP 562): a worker's child process that imports only
``workflow.worker.runner`` does not pay for NATS, DuckDB or Arrow (almost a second).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflow.api import Client, connect
    from workflow.core import errors, events
    from workflow.core.filters import WorkFilter
    from workflow.core.work import Work

_HOMES = {
    "Client": "workflow.api",
    "connect": "workflow.api",
    "Work": "workflow.core.work",
    "WorkFilter": "workflow.core.filters",
    "errors": "workflow.core.errors",
    "events": "workflow.core.events",
}

__all__ = ["Client", "Work", "WorkFilter", "connect", "errors", "events"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'workflow' has no attribute {name!r}")
    # workflow.api installs the default client of the seed's shortcuts (`await work.deposit()`).
    importlib.import_module("workflow.api")
    module = importlib.import_module(home)
    value = module if home.endswith(f".{name}") else getattr(module, name)
    globals()[name] = value
    return value
