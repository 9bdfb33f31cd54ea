"""Structured logs: ``--log-format json`` writes one JSON object per line with time,
level, logger, message and the fields a call names (work id, pipeline, attempt); the
default stays human-readable."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from conftest import eventually
from workflow import Work
from workflow.cli.app import app
from workflow.cli.output import JsonFormatter

PIPELINE = "logged"


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("workflow.test")
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args, None, extra=extra)


def test_a_json_log_line_has_time_level_logger_message_and_the_fields_the_call_named():
    line = JsonFormatter().format(record("start %s", "01ABC", work_id="01ABC", pipeline="p", attempt=2))
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "workflow.test"
    assert entry["message"] == "start 01ABC"
    assert (entry["work_id"], entry["pipeline"], entry["attempt"]) == ("01ABC", "p", 2)
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"
    assert "\n" not in line


def test_a_json_log_line_carries_the_traceback_of_an_exception_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        logger = logging.getLogger("workflow.test")
        failed = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_values_json_cannot_encode_are_written_as_text():
    entry = json.loads(JsonFormatter().format(record("x", path=Path("/data"), seconds=0.5)))
    assert entry["path"] == "/data" and entry["seconds"] == 0.5


def test_an_unknown_log_format_is_refused_as_bad_input():
    result = CliRunner().invoke(app, ["server", "--log-format", "xml"])
    assert result.exit_code == 2
    assert "--log-format" in result.output


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "workflow.cli", "run", PIPELINE, "--function", "workflow.examples.add",
            "--isolation", "thread", "--sleep", "1", *args]


async def run_worker(nats_url: str, client, tmp_path: Path, *args: str) -> tuple[list[str], list[str]]:
    """Deposit three works, run a worker with ``--lives 3 ARGS``; its stderr lines and the work ids."""
    ids = await client.deposit([Work(pipeline=PIPELINE, parameters={"a": i, "b": 1}) for i in range(3)])
    process = await asyncio.create_subprocess_exec(
        *worker_command("--lives", "3", *args), env={**os.environ, "WORKFLOW_NATS_URL": nats_url},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:  # a worker that hung is not left running after the test
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    return stderr.decode().splitlines(), ids


async def test_a_worker_with_log_format_json_writes_only_json_lines_that_name_its_works(nats_url, client, tmp_path):
    lines, ids = await run_worker(nats_url, client, tmp_path, "--log-format", "json")
    entries = [json.loads(line) for line in lines]  # every line parses
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    for work_id in ids:
        assert any(work_id == entry.get("work_id") or work_id in entry["message"] for entry in entries)




async def test_a_worker_json_log_carries_work_id_pipeline_and_attempt_as_fields(nats_url, client, tmp_path):
    lines, ids = await run_worker(nats_url, client, tmp_path, "--log-format", "json")
    entries = [json.loads(line) for line in lines]
    for work_id in ids:
        about = [entry for entry in entries if entry.get("work_id") == work_id]
        assert [entry["message"].split()[0] for entry in about] == ["finish"]  # the start line is debug
        assert all(entry["pipeline"] == PIPELINE and entry["attempt"] == 1 for entry in about)
        assert about[0]["outcome"] == "success"


async def test_the_default_log_format_stays_human_readable(nats_url, client, tmp_path):
    lines, ids = await run_worker(nats_url, client, tmp_path)
    assert lines and not any(line.startswith("{") for line in lines)
    assert any(" INFO    workflow.worker: finish " + ids[0] in line for line in lines)
    assert not any("workflow.worker: start " in line for line in lines)  # debug: not at the default level


async def test_log_level_debug_shows_when_each_work_starts(nats_url, client, tmp_path):
    lines, ids = await run_worker(nats_url, client, tmp_path, "--log-level", "debug")
    assert any(" DEBUG   workflow.worker: start " + ids[0] in line for line in lines)


async def test_the_server_logs_json_lines_too(tmp_path):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflow.cli", "server", "--port", "-1", "--data-dir", str(tmp_path / "data"),
        "--log-format", "json", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"ready" in ready
        entries: list[dict] = []

        async def projector_started():
            line = await asyncio.wait_for(process.stderr.readline(), 10)
            entries.append(json.loads(line))
            return entries[-1]["logger"] == "workflow.results"

        await eventually(projector_started, timeout=20, interval=0)
        assert entries[0]["logger"] == "workflow.server"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
