"""Work functions the Slurm tests' jobs run (on PYTHONPATH, which sbatch passes to the jobs)."""

from __future__ import annotations

import time


def slow_first_attempt(work):
    """--argsource work: the first attempt sleeps long enough to be cancelled mid-work; a
    rerun returns at once, saying which attempt it was."""
    if work.attempt == 1:
        time.sleep(120)
    return {"attempt": work.attempt}
