"""The `workflow` command line."""

from workflow.cli.app import main

__all__ = ["main"]
