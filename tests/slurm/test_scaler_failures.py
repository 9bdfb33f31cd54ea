"""The scaler when Slurm cannot be reached: a look is skipped and logged, the scaler goes on;
`workflow scale --once` says why in one line. No Slurm cluster needed: the commands are
taken off PATH."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import workflow
from workflow.followers.scale_config import parse
from workflow.followers.scaler import Scaler
from workflow.followers.slurm import Slurm

pytestmark = pytest.mark.timeout(60)

CONFIG = "scale: {interval: 1, pipelines: {p: {max: 2}}}"


def without_slurm(directory: Path) -> str:
    """A PATH holding only this Python (no sbatch, no squeue)."""
    directory.mkdir()
    (directory / "python").symlink_to(sys.executable)
    return str(directory)


async def test_a_look_that_slurm_cannot_answer_is_skipped_and_the_scaler_goes_on(nats_url, tmp_path, monkeypatch,
                                                                                caplog):
    monkeypatch.setenv("PATH", without_slurm(tmp_path / "bin"))
    caplog.set_level(logging.WARNING, "workflow.scale")
    async with workflow.connect(nats_url) as client:
        stop = asyncio.Event()
        running = asyncio.create_task(Scaler(parse(CONFIG), client, Slurm("t")).run(stop))

        async def skipped_twice() -> bool:
            return sum("this look is skipped: cannot run squeue" in r.message for r in caplog.records) >= 2

        deadline = asyncio.get_running_loop().time() + 20
        while not await skipped_twice():
            assert asyncio.get_running_loop().time() < deadline, caplog.text
            assert not running.done(), running
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(running, 10)


def test_scale_once_without_slurm_fails_with_one_line_saying_why(nats_url, tmp_path):
    config = tmp_path / "scale.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "PATH": without_slurm(tmp_path / "bin")}
    done = subprocess.run([sys.executable, "-m", "workflow.cli", "scale", str(config), "--once", "--nats", nats_url],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "cannot run squeue" in done.stderr and "is Slurm installed and on PATH?" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_config_with_a_wrong_key_fails_with_exit_2_naming_it(tmp_path):
    config = tmp_path / "scale.yaml"
    config.write_text("scale: {pipelines: {p: {mx: 2}}}")
    done = subprocess.run([sys.executable, "-m", "workflow.cli", "scale", str(config), "--once"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "unknown field `mx`" in done.stderr
