"""The operator's terminal UI (``workflow tui``; ``--web`` serves it to a browser)."""

from workflow.tui.app import WorkflowApp

__all__ = ["WorkflowApp"]
