"""The one table from a failure to its exit code and its line on stderr."""

from __future__ import annotations

import nats.errors
import pytest
import typer

from workflow.cli.output import classify, reported, run
from workflow.core.errors import ConflictError, ConnectionFailedError, NotFoundError, ValidationError, WorkflowError


@pytest.mark.parametrize(("error", "code", "line"), [
    (ConnectionFailedError("cannot reach NATS at nats://x"), 3, "error: cannot reach NATS at nats://x"),
    (ValidationError("priority", "expected 1 to 5"), 2, "error: invalid priority: expected 1 to 5"),
    (NotFoundError("no work with id X"), 1, "error: "),
    (ConflictError("the work changed"), 1, "error: the work changed"),
    (WorkflowError("refused"), 1, "error: refused"),
    (nats.errors.TimeoutError(), 3, "error: the NATS server stopped answering"),
    (nats.errors.NoRespondersError(), 3, "error: the NATS server stopped answering"),
    (TimeoutError(), 3, "error: the NATS server stopped answering"),
], ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None)
def test_each_known_failure_has_its_exit_code_and_one_error_line(error, code, line):
    found_code, message = classify(error)
    assert found_code == code
    assert message.startswith(line) and "\n" not in message


def test_ctrl_c_exits_130_without_a_message():
    assert classify(KeyboardInterrupt()) == (130, None)


def test_an_unknown_failure_is_not_in_the_table_so_its_traceback_shows():
    assert classify(ZeroDivisionError()) is None
    with pytest.raises(ZeroDivisionError), reported():
        raise ZeroDivisionError


def test_reported_prints_the_line_on_stderr_and_exits_with_the_code(capsys):
    with pytest.raises(typer.Exit) as exit_info, reported():
        raise ValidationError("site", "unknown site 'mars'")
    assert exit_info.value.exit_code == 2
    assert capsys.readouterr().err == "error: invalid site: unknown site 'mars'\n"


def test_run_applies_the_table_to_a_command_coroutine(capsys):
    async def unreachable() -> None:
        raise ConnectionFailedError("cannot reach NATS")

    with pytest.raises(typer.Exit) as exit_info:
        run(unreachable())
    assert exit_info.value.exit_code == 3
    assert capsys.readouterr().err == "error: cannot reach NATS\n"
