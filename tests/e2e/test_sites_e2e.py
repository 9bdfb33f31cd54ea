"""A site known only where works are deposited (issue 19 §5), with real processes: a
``workflow server`` and readers that do not know the site, a depositor that does.

sites.md says to add a site with ``WORKFLOW_SITES`` on the hosts that deposit or run work;
every other host must still read what the log accepted: site validation belongs to
deposit, never to decoding.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)


def env_of(url: str | None, sites: str | None) -> dict[str, str]:
    """This process's environment, pointed at ``url``, with ``WORKFLOW_SITES`` exactly ``sites``."""
    env = {k: v for k, v in os.environ.items() if k != "WORKFLOW_SITES"}
    if sites is not None:
        env["WORKFLOW_SITES"] = sites
    if url is not None:
        env["WORKFLOW_NATS_URL"] = url
    return env


def workflow_cli(*args: str, url: str, sites: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workflow.cli", *args], env=env_of(url, sites),
                          capture_output=True, text=True, timeout=90)


@pytest.fixture
def server_without_the_site(tmp_path: Path):
    """``workflow server`` (embedded nats-server, projector, results service, audit) on a
    host whose WORKFLOW_SITES is unset; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "workflow.cli", "server", "--port", "-1", "--data-dir", str(tmp_path / "data")],
        env=env_of(None, None), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        yield ready_url(process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ready_url(process: subprocess.Popen[str], timeout: float = 60) -> str:
    """The URL a starting ``workflow server`` says it is ready on (AssertionError with its
    output if it does not say so within ``timeout``)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := re.search(r"workflow server ready on (nats://\S+)", line):
            return match.group(1)
    raise AssertionError("server did not start:\n" + "".join(lines))


def test_a_site_known_only_to_the_depositor_is_read_everywhere(server_without_the_site):
    url = server_without_the_site
    # A host that does not know the site may not deposit to it: refused at deposit, one line.
    refused = workflow_cli("deposit", "far-away", "--site", "nowhere", url=url)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "unknown site 'nowhere'" in refused.stderr and "Traceback" not in refused.stderr

    deposited = workflow_cli("deposit", "far-away", "--site", "nowhere", "-P", "beam=7", "--json", url=url,
                             sites="nowhere")
    assert deposited.returncode == 0, deposited.stdout + deposited.stderr
    [work_id] = json.loads(deposited.stdout)

    listed = workflow_cli("ls", "--json", url=url)  # fresh: waits for the projection to have it
    assert listed.returncode == 0, listed.stdout + listed.stderr
    [work] = [w for w in json.loads(listed.stdout) if w["id"] == work_id]
    assert (work["site"], work["parameters"], work["status"]) == ("nowhere", {"beam": 7}, "queued")
    table = workflow_cli("ls", url=url)
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stdout + table.stderr

    shown = workflow_cli("show", work_id, "--json", url=url)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["site"] == "nowhere"
    history = workflow_cli("history", work_id, url=url)
    assert history.returncode == 0 and "Deposited" in history.stdout, history.stdout + history.stderr

    audited = workflow_cli("audit", "--json", url=url)  # the refold runs in the server, which lacks the site
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert json.loads(audited.stdout)["anomalies"] == []
