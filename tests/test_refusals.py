"""Refusals an operator meets by following the guides (issue 19): a bulk action the roles
refuse is one line and exit 4, and a bulk prompt nobody answers changes nothing and says
so. Against a real server secured by ``workflow secure init`` (the fixture of test_secure)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import workflow
from test_secure import PERMISSION_DENIED, cli, credentials, role, secured
from workflow.core.errors import PermissionDeniedError

__all__ = ["secured"]  # the fixture, shared with test_secure (one secured server per module)

pytestmark = pytest.mark.timeout(180)


def deposit_tagged(secured, pipeline: str, count: int) -> list[str]:
    """``count`` works of ``pipeline`` tagged t1, deposited by the depositor role."""
    ids = []
    for _ in range(count):
        result = cli("deposit", pipeline, "--tag", "t1", "--function", "workflow.examples.add", "-P", "a=1",
                     "-P", "b=2", env=role(secured, "depositor"))
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.strip())
    return ids


def statuses(secured, ids: list[str]) -> list[str]:
    """Each work's status as the log has it (``show``, read by the viewer)."""
    shown = [cli("show", work_id, "--json", env=role(secured, "viewer")) for work_id in ids]
    return [json.loads(result.stdout)["status"] for result in shown]


def assert_one_line_refusal(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == PERMISSION_DENIED, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr, result.stderr[-3000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: permission denied:"), result.stderr


def test_a_bulk_action_the_role_may_not_do_is_one_line_and_exit_4_and_writes_nothing(secured):
    # Given three queued works of pipeline cleanup, tagged t1
    ids = deposit_tagged(secured, "refused-cleanup", 3)
    # When a depositor or a viewer cancels, deletes or re-queues them in bulk (by filter or by ids)
    for name in ("depositor", "viewer"):
        env = role(secured, name)
        for args in (
            ("cancel", "-p", "refused-cleanup", "-s", "queued", "-t", "t1", "--yes"),
            ("delete", "-p", "refused-cleanup", "-s", "queued", "-t", "t1", "--yes"),
            ("cancel", *ids[:2]),
            ("delete", *ids[:2], "--json"),
        ):
            # Then each is refused in one line, exit 4, as docs/howto/roles.md promises
            assert_one_line_refusal(cli(*args, env=env))
    assert_one_line_refusal(cli("requeue", "-p", "refused-cleanup", "--priority", "5", "--yes",
                                env=role(secured, "viewer")))
    # and nothing was written
    assert statuses(secured, ids) == ["queued"] * 3


async def test_a_refused_bulk_action_raises_the_refusal_itself_to_a_script(secured):
    [work_id] = deposit_tagged(secured, "refused-api", 1)
    async with workflow.connect(secured[1], **credentials(secured, "depositor")) as client:
        with pytest.raises(PermissionDeniedError, match="may not publish to"):
            await client.cancel_many(pipeline="refused-api", status="queued")
        with pytest.raises(PermissionDeniedError):
            await client.delete_many([work_id])


def closed_stdin() -> None:
    """In the child, before it runs: no standard input at all (``workflow cancel … <&-``)."""
    os.close(0)


@pytest.mark.parametrize("stdin", ["end-of-file", "closed"])
def test_a_bulk_prompt_nobody_answers_cancels_nothing_and_says_so(secured, stdin):
    ids = deposit_tagged(secured, f"unanswered-{stdin}", 2)
    command = [sys.executable, "-m", "workflow.cli", "cancel", "-p", f"unanswered-{stdin}", "-s", "queued"]
    result = subprocess.run(
        command, env=role(secured, "operator"), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL if stdin == "end-of-file" else None,
        preexec_fn=closed_stdin if stdin == "closed" else None,
    )
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "cancel 2 works" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: not confirmed; nothing was cancelled (--yes acts without asking)"
    ), result.stderr
    assert "Abort" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert statuses(secured, ids) == ["queued"] * 2


@pytest.mark.parametrize("name", ["viewer", "depositor"])
def test_a_filtered_worker_the_role_may_not_be_stops_at_once_with_one_line_and_exit_4(secured, name):
    # Given a queued work tagged t1, When a viewer or a depositor runs a worker taking only t1
    deposit_tagged(secured, f"filtered-{name}", 1)
    result = cli("run", f"filtered-{name}", "--tag", "t1", "--lives", "1", "--sleep", "1", env=role(secured, name),
                 timeout=60)
    # Then its claim is refused once, and it stops: exit 4, one error line (before: a warning
    # every few milliseconds, for ever)
    assert result.returncode == PERMISSION_DENIED, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if "permission denied" in line] == [
        result.stderr.splitlines()[-1]], result.stderr[-2000:]
    assert result.stderr.splitlines()[-1].startswith("error: permission denied:"), result.stderr[-2000:]


def test_a_group_of_known_errors_is_its_first_errors_line_and_a_group_with_a_bug_shows_its_traceback():
    from workflow.cli.output import classify

    refused = ExceptionGroup("unhandled errors in a TaskGroup", [
        PermissionDeniedError("permission denied: a"), ExceptionGroup("inner", [PermissionDeniedError("b")])])
    assert classify(refused) == (4, "error: permission denied: a")
    assert classify(ExceptionGroup("x", [PermissionDeniedError("a"), ZeroDivisionError()])) is None
