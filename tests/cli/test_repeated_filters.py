"""``workflow ls`` and ``count`` with a filter given more than once: any of its values
(as ``cancel -p a -p b``), never silently the last one only (issue 19 #11)."""

from __future__ import annotations

import json
import subprocess
import sys

import typer
from test_results_cli import cli

import workflow
from workflow.cli.app import app
from workflow.cli.repeats import repeated_option


async def test_ls_and_count_with_repeated_pipelines_statuses_and_sites_match_any_of_them(
    client, results_service, nats_url
):
    # Given works in four pipelines, one of them cancelled and one at another site
    ids = {name: (await client.deposit(workflow.Work(pipeline=name)))[0] for name in ("a", "b", "c", "d")}
    [elsewhere] = await client.deposit(workflow.Work(pipeline="a", site="kko"))
    await client.cancel(ids["b"])
    await client.results.count(fresh=True)
    # When ls names three pipelines, Then it lists the works of all three
    code, out, err = await cli("ls", "-p", "a", "-p", "b", "-p", "c", "--json", "--nats", nats_url)
    assert code == 0, err
    assert sorted(w["id"] for w in json.loads(out)) == sorted([ids["a"], ids["b"], ids["c"], elsewhere])
    assert await cli("count", "-p", "a", "-p", "b", "-p", "c", "--json", "--nats", nats_url) == (
        0, '{"count":4}\n', "")
    # and repeated statuses and sites are "any of" too
    code, out, err = await cli("ls", "-s", "cancelled", "-s", "queued", "-p", "b", "-p", "d", "--json",
                               "--nats", nats_url)
    assert code == 0 and sorted(w["id"] for w in json.loads(out)) == sorted([ids["b"], ids["d"]]), err
    assert await cli("count", "--site", "kko", "--site", "chime", "--json", "--nats", nats_url) == (
        0, '{"count":1}\n', "")


def test_a_single_valued_option_given_twice_is_refused_not_silently_the_last():
    """Click keeps the last of a repeated single-valued option: ``ls --user ann --user bob``
    listed bob's only, without a word. Refused before anything connects (exit 2)."""
    for args, option in ((["ls", "--user", "ann", "--user", "bob"], "--user"),
                         (["ls", "--fresh", "--no-fresh"], "--fresh"),
                         (["cancel", "--reason", "--user", "--reason", "x"], "--reason"),
                         (["schedule", "add", "n", "p", "--every", "1m", "--every", "2m"], "--every"),
                         (["deposit", "p", "--priority", "3", "--priority=5"], "--priority")):
        result = subprocess.run([sys.executable, "-m", "workflow.cli", *args, "--nats", "nats://127.0.0.1:1"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert f"Invalid value for {option}: given" in result.stderr and "takes one value" in result.stderr, result
    root = typer.main.get_command(app)
    assert repeated_option(root, ["ls", "-p", "a", "-p", "b", "-t", "x", "-t", "y"]) is None
    assert repeated_option(root, ["server", "--port", "-1", "--data-dir", "d"]) is None
    assert repeated_option(root, ["deposit", "p", "--", "--priority", "--priority"]) is None
