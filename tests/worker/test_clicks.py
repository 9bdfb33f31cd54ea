"""Click commands as work functions (the work's parameters as their arguments) and
``--argsource work`` (the function receives the whole Work): called directly, then run by
a worker against a real nats-server in thread and process isolation."""

from __future__ import annotations

import pytest

from workflow import Work
from workflow.core import events as ev
from workflow.worker.clicks import arguments_for
from workflow.worker.loop import Worker, WorkerConfig
from workflow.worker.runner import FunctionCall, call_function

pytestmark = pytest.mark.timeout(90)

CALIBRATE = "click_commands.calibrate"


def call(function: str, **parameters) -> object:
    return call_function(FunctionCall(function=f"click_commands.{function}", parameters=parameters))


def test_options_a_flag_a_count_a_multiple_option_and_an_argument_become_the_commands_arguments():
    outcome = call("calibrate", source="B0329+54", count=3, scale=0.5, loud=True, verbose=2, beams=[1, 2, 3],
                   window=[10, 20])
    assert outcome.status == "succeeded", outcome.error
    assert outcome.results == {"source": "B0329+54", "count": 3, "scale": 0.5, "loud": True, "verbose": 2,
                               "beams": [1, 2, 3], "window": [10, 20]}


def test_parameters_left_out_take_the_commands_defaults_and_a_false_flag_its_off_switch():
    outcome = call("calibrate", source="-starts-with-a-dash", loud=False)
    assert outcome.results == {"source": "-starts-with-a-dash", "count": 1, "scale": 1.0, "loud": False,
                               "verbose": 0, "beams": [], "window": [0, 0]}


def test_the_argv_a_command_is_given_reads_as_on_a_shell():
    import click_commands

    argv = arguments_for(click_commands.calibrate, {"source": "s", "count": 2, "loud": False, "beams": [4, 5]})
    assert argv == ["--count", "2", "--quiet", "--beam", "4", "--beam", "5", "--", "s"]
    assert arguments_for(click_commands.stack, {"files": ["a", "b"], "dry_run": True}) == [
        "--dry-run", "--", "a", "b"]
    assert arguments_for(click_commands.stack, {"dry_run": False}) == []  # a flag without an off switch: left out


def test_a_usage_error_raised_by_the_command_fails_the_attempt_with_its_message():
    outcome = call("refuses", beam=7)
    assert outcome.status == "failed"
    assert outcome.error == "UsageError: beam 7 is not on the sky"


def test_exit_code_zero_succeeds_and_any_other_fails_naming_it():
    assert call("exits", code=0).status == "succeeded"
    failed = call("exits", code=2)
    assert (failed.status, failed.error) == ("failed", "the click command exited with code 2")
    ended = call("ends_its_context")
    assert (ended.status, ended.error) == ("failed", "the click command exited with code 3")


def test_parameters_the_command_cannot_parse_make_the_work_unrunnable_with_clicks_message():
    unknown = call("calibrate", source="s", colour="red")
    assert unknown.status == "unrunnable"
    assert "no parameter 'colour'" in unknown.error and "beams" in unknown.error
    bad_value = call("calibrate", source="s", count="many")
    assert bad_value.status == "unrunnable"
    assert "'many' is not a valid integer" in bad_value.error
    missing = call("refuses")
    assert missing.status == "unrunnable" and "Missing option '--beam'" in missing.error
    not_a_list = call("calibrate", source="s", beams=3)
    assert not_a_list.status == "unrunnable" and "expected a list" in not_a_list.error


def test_argsource_work_hands_the_function_the_whole_work_and_takes_what_it_set():
    work = Work(pipeline="p", event=[9386707], tags=["frb"], parameters={"ignored": 1})
    outcome = call_function(FunctionCall(function="click_commands.reads_the_event", work=work))
    assert outcome.status == "succeeded", outcome.error
    assert outcome.results == {"event": [9386707], "tags": ["frb"], "pipeline": "p"}
    assert outcome.products == ["/data/9386707.fits"]


def worker(url: str, **options) -> Worker:
    return Worker(WorkerConfig(**{"pipelines": ["clk"], "sleep": 300, "connect": {"url": url}, **options}))


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_a_worker_runs_click_commands_in_its_isolation_and_records_each_outcome(client, nats_url, isolation):
    ok, refused, exit0, exit2 = await client.deposit([
        Work(pipeline="clk", function=CALIBRATE, parameters={"source": "crab", "count": 2, "loud": True,
                                                               "beams": [7, 8]}),
        Work(pipeline="clk", function="click_commands.refuses", parameters={"beam": 1}, retries=0),
        Work(pipeline="clk", function="click_commands.exits", parameters={"code": 0}),
        Work(pipeline="clk", function="click_commands.exits", parameters={"code": 2}, retries=0),
    ])
    assert await worker(nats_url, lives=4, isolation=isolation).run() == 0
    done = await client.get(ok)
    assert (done.status, done.results["count"], done.results["loud"], done.results["beams"]) == (
        "success", 2, True, [7, 8])
    [usage] = [e for e in await client.history(refused) if isinstance(e, ev.Failed)]
    assert usage.error == "UsageError: beam 1 is not on the sky"
    assert (await client.get(exit0)).status == "success"
    [exited] = [e for e in await client.history(exit2) if isinstance(e, ev.Failed)]
    assert exited.error == "the click command exited with code 2"
    assert (await client.get(exit2)).status == "failure"


#: The function names a product it never wrote (``/data/<event>.fits``): recorded as it is,
#: not archived (the archive would refuse a path outside the work's directory).
BYPASS = {"archive": {"products": "bypass", "plots": "bypass"}}


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_argsource_work_runs_the_function_on_the_whole_work_in_a_worker(client, nats_url, isolation):
    first, second = await client.deposit([
        Work(pipeline="clk", function="click_commands.reads_the_event", event=[12345], tags=["cal"], config=BYPASS),
        Work(pipeline="clk", function="click_commands.returns_a_dict"),
    ])
    assert await worker(nats_url, lives=2, isolation=isolation, argsource="work").run() == 0
    done = await client.get(first)
    assert (done.status, done.results, done.products) == (
        "success", {"event": [12345], "tags": ["cal"], "pipeline": "clk"}, ["/data/12345.fits"])
    assert (await client.get(second)).results == {"id": second, "attempt": 1}


def test_an_unknown_argsource_is_refused_naming_the_option():
    from workflow.core.errors import ValidationError

    with pytest.raises(ValidationError, match="argsource"):
        WorkerConfig(pipelines=["clk"], argsource="event").check()


async def test_workflow_run_argsource_work_from_the_command_line(client, nats_url):
    import asyncio
    import os
    import sys
    from pathlib import Path

    [work_id] = await client.deposit(
        Work(pipeline="clk", function="click_commands.reads_the_event", event=[777], tags=["cli"], config=BYPASS))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflow.cli", "run", "clk", "--argsource", "work", "--lives", "1",
        "--isolation", "thread", "--nats", nats_url, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    assert (await client.get(work_id)).results == {"event": [777], "tags": ["cli"], "pipeline": "clk"}
