"""workflow: the CHIME/FRB bookkeeping and work-queue system, event-sourced on NATS JetStream.

    import workflow
    async with workflow.connect() as client:
        [work_id] = await client.deposit(workflow.Work(pipeline="sample-pipeline", parameters={"a": 1}))
"""

from workflow import errors, events
from workflow.client import Client, connect
from workflow.work import Work

__all__ = ["Client", "Work", "connect", "errors", "events"]
__version__ = "0.1.0"
