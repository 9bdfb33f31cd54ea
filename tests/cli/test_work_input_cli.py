"""A bad work on the command line is one line in the user's words, exit 2 (issue 18 §5),
and a site is checked against the depositing host's list (issue 19 §5). Real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import workflow


def workflow_cli(*args: str, url: str, sites: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WORKFLOW_SITES"}
    if sites is not None:
        env["WORKFLOW_SITES"] = sites
    return subprocess.run([sys.executable, "-m", "workflow.cli", *args, "--nats", url], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["deposit", "bad name"], "error: invalid pipeline: pipeline names are 1–128 letters, digits and '-'; "
                                  "got 'bad name'"),
        (["deposit", "p", "--priority", "9"], "error: invalid priority: priority is 1 (lowest) to 5 (highest), "
                                              "a whole number; got 9"),
        (["deposit", "p", "--timeout", "0"], "error: invalid timeout: timeout is 1 to 259200 seconds (3 days), "
                                             "a whole number; got 0"),
        (["deposit", "p", "--retries", "6"], "error: invalid retries: retries is 0 to 5 (how many times a failed "
                                             "attempt is tried again), a whole number; got 6"),
        (["deposit", "p", "--site", "has.dot"], "error: invalid site: site names are 1–64 letters, digits and '-'; "
                                                "got 'has.dot'"),
        (["deposit", "p", "--site", "mars"], "error: invalid site: unknown site 'mars'; known sites: allenby, aro, "
                                             "canfar, cedar, chime, gbo, hco, kko, local (set WORKFLOW_SITES=a,b on "
                                             "this host to add more)"),
    ],
)
async def test_a_bad_work_is_one_line_in_the_users_words(nats_url, args, line):
    result = workflow_cli(*args, url=nats_url)
    assert (result.returncode, result.stderr) == (2, line + "\n")
    assert not await deposited(nats_url, within=1.0)  # absence: a second's look


async def test_a_site_added_on_the_depositing_host_is_accepted_there(nats_url):
    result = workflow_cli("deposit", "p", "--site", "mars", url=nats_url, sites="mars,venus")
    assert result.returncode == 0, result.stderr
    assert await deposited(nats_url)


async def deposited(url: str, within: float = 10) -> bool:
    """Whether a work of pipeline ``p`` (any site) can be withdrawn within ``within`` s."""
    async with workflow.connect(url) as client:
        return await client.withdraw("p", timeout=within, poll=0.05) is not None


async def test_deposit_config_is_a_json_object_given_to_the_work(nats_url):
    result = workflow_cli("deposit", "p", "--config", '{"archive": {"products": "move"}, "retry_on": ["error"]}',
                          "--json", url=nats_url)
    assert result.returncode == 0, result.stderr
    async with workflow.connect(nats_url) as client:
        [work_id] = json.loads(result.stdout)
        work = await client.get(work_id)
    assert work.config == {"archive": {"products": "move"}, "retry_on": ["error"]}
    for bad, why in (('{"retry_on": ', "is a JSON object, e.g."), ('["error"]', "not list")):
        refused = workflow_cli("deposit", "p", "--config", bad, url=nats_url)
        assert refused.returncode == 2 and refused.stderr.startswith("error: invalid config: --config") \
            and why in refused.stderr, refused.stderr
