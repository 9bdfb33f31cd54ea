"""workflow: the CHIME/FRB bookkeeping and work-queue system, event-sourced on NATS JetStream.

    import workflow
    async with workflow.connect() as client:
        [work_id] = await client.deposit(workflow.Work(pipeline="sample-pipeline", parameters={"a": 1}))
"""

from workflow.api import Client, connect
from workflow.core import errors, events
from workflow.core import session as _session
from workflow.core.work import Work

# The seed's shortcuts (`await work.deposit()`) open a default client when none is bound.
_session.install_factory(Client)

__all__ = ["Client", "Work", "connect", "errors", "events"]
__version__ = "0.1.0"
