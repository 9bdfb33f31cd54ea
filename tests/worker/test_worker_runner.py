"""The return-value rule, function resolution and outcomes, without NATS."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from workflow.core.errors import ResultsError, UnknownFunctionError, ValidationError
from workflow.worker.loop import WorkerConfig
from workflow.worker.outcome import normalize
from workflow.worker.runner import (
    MAX_OUTPUT_BYTES,
    FunctionCall,
    call_function,
    command_outcome,
    resolve,
)


class Array:
    """Stands for a numpy array: anything with ``tolist()``."""

    def tolist(self):
        return [1, 2]


def exits_with(status: int) -> None:
    sys.exit(status)


def test_a_dict_is_the_results():
    assert normalize({"snr": 12.5}) == ({"snr": 12.5}, None, None)


def test_a_scalar_is_kept_as_value():
    assert normalize(3) == ({"value": 3}, None, None)
    assert normalize("done") == ({"value": "done"}, None, None)
    assert normalize([1, 2]) == ({"value": [1, 2]}, None, None)


def test_none_gives_no_results():
    assert normalize(None) == (None, None, None)


def test_a_tuple_gives_results_products_and_plots_by_position_of_kind():
    assert normalize(({"a": 1}, [Path("/x.fits")], ["/p.png"])) == ({"a": 1}, ["/x.fits"], ["/p.png"])
    assert normalize((["/x.fits"],)) == (None, ["/x.fits"], None)


def test_numpy_like_values_paths_and_sets_become_json():
    results = {"a": [1, 2], "p": "/d", "s": [1, 2]}
    assert normalize({"a": Array(), "p": Path("/d"), "s": {2, 1}}) == (results, None, None)


def test_results_that_are_not_json_are_refused_not_stringified():
    with pytest.raises(ResultsError, match="cannot store"):
        normalize({"x": object()})


def test_resolve_finds_module_functions_and_names_what_is_missing():
    assert resolve("workflow.examples.add")(a=1, b=2) == 3
    with pytest.raises(UnknownFunctionError, match=r"workflow\.examples has no nope"):
        resolve("workflow.examples.nope")
    with pytest.raises(UnknownFunctionError, match="no module 'nowhere_at_all'"):
        resolve("nowhere_at_all.f")
    with pytest.raises(UnknownFunctionError, match="not callable"):
        resolve("workflow.worker.runner.MAX_OUTPUT_BYTES")


def test_call_function_reports_errors_with_a_traceback_and_unknown_functions_as_unrunnable():
    failed = call_function(FunctionCall(function="workflow.examples.fail", parameters={"message": "no"}))
    assert failed.status == "failed" and failed.error == "RuntimeError: no"
    assert "raise RuntimeError(message)" in failed.traceback
    assert call_function(FunctionCall(function="workflow.examples.gone")).status == "unrunnable"


def test_call_function_awaits_async_functions_and_counts_sys_exit_as_failure():
    done = call_function(FunctionCall(function="workflow.examples.async_add", parameters={"a": 1, "b": 2}))
    assert (done.status, done.results) == ("succeeded", {"sum": 3})
    exited = call_function(FunctionCall(function=f"{__name__}.exits_with", parameters={"status": 2}))
    assert exited.status == "failed" and exited.error == "SystemExit: 2"


def test_a_command_outcome_keeps_the_tail_of_long_output_and_says_how_much_was_cut():
    outcome = command_outcome(["x"], 1, b"a" * (MAX_OUTPUT_BYTES + 10) + b"END", b"")
    assert outcome.status == "failed" and outcome.error == "command exited with code 1"
    assert outcome.results["stdout"].endswith("END") and outcome.results["stdout_truncated_bytes"] == 13
    assert command_outcome(["x"], -9, b"", b"").error == "command killed by signal 9"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"pipelines": []}, "pipeline"),
        ({"pipelines": ["bad name"]}, "pipeline"),
        ({"lives": 0}, "lives"),
        ({"sleep": 0.5}, "sleep"),
        ({"sleep": 301}, "sleep"),
        ({"concurrency": 0}, "concurrency"),
        ({"isolation": "vm"}, "isolation"),
        ({"isolation": "none", "concurrency": 2}, "concurrency"),
        ({"function": "nodots"}, "function"),
        ({"function": "a.b", "command": ["ls"]}, "function"),
    ],
)
def test_worker_options_out_of_bounds_are_refused_with_the_option_named(changes, field):
    config = WorkerConfig(**{"pipelines": ["sample-pipeline"], **changes})
    with pytest.raises(ValidationError) as raised:
        config.check()
    assert raised.value.field == field


def test_the_cli_refuses_bad_worker_options_before_connecting():
    import subprocess

    result = subprocess.run([sys.executable, "-m", "workflow.cli", "run", "p", "--sleep", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "sleep" in result.stderr


def test_parameters_that_do_not_fit_the_function_are_unrunnable_not_retried():
    outcome = call_function(FunctionCall(function="workflow.examples.add", parameters={"a": 1, "c": 2}))
    assert outcome.status == "unrunnable"
    assert outcome.error == (
        "the work's parameters do not fit workflow.examples.add(a, b, plot=None): missing a required argument: 'b'"
    )


def test_the_example_functions_show_each_shape_of_the_return_value_rule(tmp_path):
    def outcome(function: str, **parameters: object) -> tuple[object, ...]:
        o = call_function(FunctionCall(function=f"workflow.examples.{function}", parameters=parameters))
        return o.status, o.results, o.products, o.plots

    assert outcome("add", a=1, b=2) == ("succeeded", {"value": 3}, None, None)
    assert outcome("add", a=1, b=2, plot=str(tmp_path)) == (
        "succeeded", {"value": 3}, [], [str(tmp_path / "sum-1-2.png")])
    assert outcome("add_results", a=1, b=2) == ("succeeded", {"sum": 3}, None, None)
    assert outcome("with_products", name="x", directory=str(tmp_path), size=10) == (
        "succeeded", {"name": "x", "bytes": 10}, [str(tmp_path / "x.dat")], [str(tmp_path / "x.png")])
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
