"""A small chaos run (``benchmarks/chaos.py``): 200 works flow through real ``workflow run``
processes while one worker and the whole server are SIGKILLed and started again.

The promise under test is the log's, not the execution's: no work is lost, no work has
two successes recorded, and the audit of the read model against the log is clean. A
function may run twice (at-least-once); that figure is printed, not asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import chaos

pytestmark = pytest.mark.timeout(180)


async def test_works_flowing_through_a_worker_kill_and_a_server_kill_are_neither_lost_nor_recorded_twice(tmp_path):
    figures = await chaos.run(
        works=200, workers=2, worker_kills=1, server_kills=1, lease=3.0, concurrency=2, seconds=0.05,
        seed=20261127, workdir=tmp_path / "chaos", timeout=150,
    )
    print(figures.table())
    assert (figures.worker_kills, figures.server_kills) == (1, 1)
    assert figures.deposited == 200
    assert figures.works_lost == 0
    assert figures.successes_twice == 0
    assert figures.succeeded == 200
    assert figures.audit_exit_code == 0 and figures.audit["total"] == 0, figures.audit
    assert figures.executions >= 200  # every work ran at least once
