"""`python -m workflow.cli`: the same as the `workflow` command."""

from workflow.cli import main

main()
