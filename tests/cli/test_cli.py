"""The command line as a user types it (real processes against a real server)."""

from __future__ import annotations

import json
import subprocess
import sys


def workflow_cli(*args: str, url: str | None = None) -> subprocess.CompletedProcess:
    extra = ["--nats", url] if url else []
    command = [sys.executable, "-m", "workflow.cli", *args, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


async def test_deposit_prints_ids_and_show_and_history_read_them_back(nats_url):
    result = workflow_cli("deposit", "sample-pipeline", "--param", "a=1", "-P", "b=[2, 3]", "-P", "name=crab",
                          "--priority", "5", "--tag", "x", "--json", url=nats_url)
    assert result.returncode == 0, result.stderr
    [work_id] = json.loads(result.stdout)
    shown = json.loads(workflow_cli("show", work_id, "--json", url=nats_url).stdout)
    assert shown["parameters"] == {"a": 1, "b": [2, 3], "name": "crab"}
    assert (shown["priority"], shown["tags"], shown["status"]) == (5, ["x"], "queued")
    assert workflow_cli("cancel", work_id, "--reason", "demo", url=nats_url).returncode == 0
    history = workflow_cli("history", work_id, url=nats_url)
    assert "Deposited" in history.stdout and "cancelled: demo" in history.stdout
    timeline = json.loads(workflow_cli("history", work_id, "--json", url=nats_url).stdout)
    assert [entry["event"]["type"] for entry in timeline] == ["deposited", "cancelled"]


async def test_deposit_count_deposits_that_many(nats_url):
    result = workflow_cli("deposit", "p", "--count", "5", url=nats_url)
    assert len(result.stdout.split()) == 5


async def test_bad_input_exits_2_naming_the_field(nats_url):
    for args, field in ((["deposit", "bad name"], "pipeline"), (["deposit", "p", "--priority", "9"], "priority"),
                        (["deposit", "p", "--site", "mars"], "site")):
        result = workflow_cli(*args, url=nats_url)
        assert result.returncode == 2, result
        assert f"invalid {field}:" in result.stderr and "Traceback" not in result.stderr
    result = workflow_cli("deposit", "p", "--param", "novalue", url=nats_url)
    assert result.returncode == 2 and "key=value" in result.stderr


async def test_unknown_ids_exit_1(nats_url):
    for command in ("show", "cancel", "history"):
        result = workflow_cli(command, "01NOSUCHWORK0000000000000", url=nats_url)
        assert result.returncode == 1 and "no work with id" in result.stderr


def test_help_teaches_the_commands():
    result = workflow_cli("--help")
    for command in ("server", "deposit", "cancel", "show", "history"):
        assert command in result.stdout
    assert "Example: workflow deposit" in workflow_cli("deposit", "--help").stdout


async def test_buckets_lists_each_bucket_with_its_counts(nats_url):
    workflow_cli("deposit", "p", "--count", "2", "--priority", "4", url=nats_url)
    [row] = json.loads(workflow_cli("buckets", "--json", url=nats_url).stdout)
    assert (row["pipeline"], row["site"], row["priority"], row["undelivered"], row["held"]) == ("p", "local", 4, 2, 0)
    assert "waiting" in workflow_cli("buckets", url=nats_url).stdout


async def test_deposit_user_alice_stores_user_alice_and_does_not_log_in_as_alice(nats_url):
    result = workflow_cli("deposit", "p", "--user", "alice", "--json", url=nats_url)
    assert result.returncode == 0, result.stderr
    [work_id] = json.loads(result.stdout)
    assert json.loads(workflow_cli("show", work_id, "--json", url=nats_url).stdout)["user"] == "alice"


def test_deposit_help_lists_user_once_as_the_works_user_and_the_nats_login_apart():
    help_text = workflow_cli("deposit", "--help").stdout
    assert help_text.count("--user ") == 1 and "the work's user" in help_text
    assert help_text.count("--nats-user ") == 1


async def test_streams_apply_reports_the_stream_up_to_date_on_a_prepared_server(nats_url):
    result = workflow_cli("streams", "apply", url=nats_url)
    assert result.returncode == 0, result.stderr
    assert "stream WORKFLOW: up to date" in result.stdout


def test_streams_apply_without_a_server_exits_3_in_one_line_instead_of_retrying_forever():
    result = workflow_cli("streams", "apply", url="nats://127.0.0.1:1")
    assert result.returncode == 3 and result.stderr.startswith("error: cannot reach NATS at nats://127.0.0.1:1")
    assert "Traceback" not in result.stderr


async def test_deposit_after_and_delay_make_works_that_wait_and_show_says_on_what(nats_url):
    [first] = json.loads(workflow_cli("deposit", "p", "--json", url=nats_url).stdout)
    result = workflow_cli("deposit", "p", "--after", first, "--delay", "1h", "--json", url=nats_url)
    assert result.returncode == 0, result.stderr
    [then] = json.loads(result.stdout)
    shown = workflow_cli("show", then, url=nats_url).stdout
    assert "waiting" in shown and f"after {first}" in shown and "not before" in shown
    assert "waiting for" in workflow_cli("history", then, url=nats_url).stdout
    unknown = workflow_cli("deposit", "p", "--after", "01JNOSUCH", url=nats_url)
    assert unknown.returncode == 2 and "01JNOSUCH" in unknown.stderr
    assert workflow_cli("deposit", "p", "--delay", "soon", url=nats_url).returncode == 2
