"""Configurations end to end: a real ``workflow server`` (its resolver releases the steps), a
real ``workflow run`` worker and the real CLI on one NATS.

The issue's test: a 3-stage configuration with a 2×3 matrix where one work fails: the
failure branch runs, the later stage is skipped naming the failed step, ``always`` runs;
``retry`` then reruns only what failed and what followed it; ``stop`` mid-run cancels the
rest. And a file with three errors gets three located messages, exit 2, and no event.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from deployed import end, env_for, log_tails, until, workflow_process

import workflow
from workflow.log import jsapi

pytestmark = pytest.mark.timeout(180)

CHAIN = textwrap.dedent("""\
    name: localise
    defaults:
      pipeline: chain
      function: worker_functions.chain_step
      retries: 0
    matrix:
      event: [1, 2]
    steps:
      - name: fetch
        stage: 1
        work: {parameters: {event: "${{ matrix.event }}"}}
      - name: beams
        stage: 2
        matrix:
          beam: {range: 3}
        work:
          parameters:
            event: "${{ matrix.event }}"
            beam: "${{ matrix.beam }}"
            fail_when: {event: FAIL_EVENT, beam: 2}
      - name: summary
        stage: 3
        work: {parameters: {event: "${{ matrix.event }}"}}
      - name: tell
        if: failure
        work: {parameters: {what: "${{ matrix.event }} failed"}}
      - name: tidy
        if: always
        work: {parameters: {what: tidy}}
""")


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workflow.cli", *args, "--nats", url], env=env_for(url),
                          capture_output=True, text=True, timeout=60)


def ps(url: str, *args: str) -> dict:
    shown = cli(url, "configs", "ps", *args, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


async def test_a_failing_matrix_work_runs_the_failure_branch_skips_the_later_stage_and_retry_reruns_only_it(
    nats_url: str, tmp_path: Path
):
    env = env_for(nats_url)
    logs = [tmp_path / "server.log", tmp_path / "worker.log"]
    server = workflow_process(["server", "--nats", nats_url, "--data-dir", str(tmp_path / "data")], env,
                              logs[0], tmp_path)
    worker = workflow_process(["run", "chain", "--sleep", "1"], env, logs[1], tmp_path)
    try:
        await until(lambda: "resolver live" in logs[0].read_text(), timeout=60, explain=lambda: log_tails(logs))
        # Given a 3-stage configuration whose stage 2 (2 events x 3 beams) fails at event 2, beam 2
        path = tmp_path / "localise.yaml"
        path.write_text(CHAIN.replace("FAIL_EVENT", "2"))
        deployed = cli(nats_url, "configs", "deploy", str(path), "--json")
        assert deployed.returncode == 0, deployed.stderr
        run = json.loads(deployed.stdout)["run"]

        # When it runs to the end
        def finished() -> dict | None:
            shown = ps(nats_url, "localise", run)
            return shown if shown["status"] != "running" else None

        shown = await until(finished, timeout=90, explain=lambda: log_tails(logs))
        # Then the failed step failed once, the failure branch and `always` ran, stage 3 was skipped
        steps = {step["name"]: step for step in shown["steps"]}
        assert shown["status"] == "failure"
        assert steps["fetch"]["counts"] == {"success": 2}
        assert steps["beams"]["counts"] == {"success": 5, "failure": 1}
        assert steps["summary"]["counts"] == {"cancelled": 2}
        assert steps["tell"]["counts"] == {"success": 2} and steps["tidy"]["counts"] == {"success": 2}
        async with workflow.connect(nats_url) as client:
            failed = next(w for w, s in shown["works"].items() if s["status"] == "failure")
            for work_id, slot in shown["works"].items():
                if slot["step"] == "summary":  # cancelled naming the failed step
                    [*_, last] = await client.history(work_id)
                    assert last.reason == f"skipped: step beams failed (precursor {failed})"
            # the run's works, selected by its id through the read model
            listed = cli(nats_url, "ls", "--run", run, "--json", "-n", "100")
            assert listed.returncode == 0, listed.stderr
            assert sorted(w["id"] for w in json.loads(listed.stdout)) == sorted(shown["works"])

            # When the run is retried (its works are the deployed file's, so event 2 beam 2 fails again)
            retried = cli(nats_url, "configs", "retry", "localise", run, "--json")
            assert retried.returncode == 0, retried.stderr
            replaced = json.loads(retried.stdout)["replaced"]
            # Then only the failed work and what followed it run again: stage 3 and the conditional steps
            steps_of = {w: s["step"] for w, s in shown["works"].items()}
            assert sorted(steps_of[w] for w in replaced) == ["beams", "summary", "summary", "tell", "tell",
                                                             "tidy", "tidy"]
            again = await until(finished, timeout=90, explain=lambda: log_tails(logs))
            assert {s["name"]: s["counts"] for s in again["steps"]}["beams"] == {"success": 5, "failure": 1}
            for work_id, slot in shown["works"].items():
                if work_id not in replaced:  # fetch and the beams that succeeded: not run again
                    assert slot["step"] in ("fetch", "beams") and slot["status"] == "success"
                    names = [type(e).__name__ for e in await client.history(work_id)]
                    assert names.count("Started") == 1, (work_id, names)
            history = cli(nats_url, "configs", "ps", "localise", run)
            assert history.returncode == 0 and run in history.stdout
            listed = json.loads(cli(nats_url, "configs", "ls", "--json").stdout)
            assert [c["name"] for c in listed] == ["localise"] and listed[0]["runs"][0]["retries"][0]["retry"] == 1
    finally:
        end(worker)
        end(server)


async def test_stop_mid_run_cancels_what_has_not_finished(nats_url: str, tmp_path: Path):
    # No server: nothing is released, the run stays in stage 1 with its later stages waiting
    path = tmp_path / "localise.yaml"
    path.write_text(CHAIN.replace("FAIL_EVENT", "0"))
    deployed = cli(nats_url, "configs", "deploy", str(path), "--json")
    run = json.loads(deployed.stdout)["run"]
    assert ps(nats_url, "localise")["stage"] == 1
    stopped = cli(nats_url, "configs", "stop", "localise", run, "--reason", "wrong beams", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert len(json.loads(stopped.stdout)["cancelled"]) == 2 + 6 + 2 + 2 + 2
    shown = ps(nats_url, "localise", run)
    assert shown["status"] == "stopped" and {s["status"] for s in shown["works"].values()} == {"cancelled"}
    again = cli(nats_url, "configs", "stop", "localise", run)
    assert again.returncode == 1 and "already stopped" in again.stderr
    removed = cli(nats_url, "configs", "rm", "localise")
    assert removed.returncode == 0 and json.loads(cli(nats_url, "configs", "ls", "--json").stdout) == []


async def test_a_file_with_three_errors_gets_three_located_messages_exit_2_and_no_event(nats_url: str, tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nsteps:\n  - name: a\n    stgae: 1\n    work: {pipeline: p, priority: 9}\n"
                    "  - name: b\n    if: sometimes\n    work: {pipeline: p}\n")
    dry = cli(nats_url, "configs", "deploy", str(path), "--dry-run")
    real = cli(nats_url, "configs", "deploy", str(path))
    for result in (dry, real):
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert [line.split(": ")[0] for line in lines[:3]] == [f"{path}:4:5", f"{path}:5:35", f"{path}:7:9"]
        assert lines[3] == f"error: 3 problems in {path}; nothing deployed"
    async with workflow.connect(nats_url) as client:
        info = await jsapi.request(client.nc, "STREAM.INFO.WORKFLOW")
        assert info["state"]["messages"] == 0
    good = tmp_path / "good.yaml"
    good.write_text(CHAIN.replace("FAIL_EVENT", "0"))
    dry = cli(nats_url, "configs", "deploy", str(good), "--dry-run", "--json")
    assert dry.returncode == 0 and len(json.loads(dry.stdout)) == 14


async def test_a_scheduled_configuration_under_two_servers_runs_exactly_count_times_then_expires(
    nats_url: str, tmp_path: Path
):
    env = env_for(nats_url)
    logs = [tmp_path / f"server{i}.log" for i in range(2)]
    servers = [workflow_process(["server", "--nats", nats_url, "--data-dir", str(tmp_path / f"data{i}")], env,
                                logs[i], tmp_path) for i in range(2)]
    try:
        await until(lambda: all("scheduler live" in log.read_text() for log in logs), timeout=60,
                    explain=lambda: log_tails(logs))
        path = tmp_path / "ticking.yaml"
        path.write_text("name: ticking\nschedule:\n  cron: '* * * * * *'\n  count: 3\nsteps:\n"
                        "  - {name: a, matrix: {i: [1, 2]}, work: {pipeline: tick, parameters: {i: '${{ matrix.i }}'}}}"
                        "\n")
        deployed = cli(nats_url, "configs", "deploy", str(path), "--json")
        assert deployed.returncode == 0, deployed.stderr
        assert json.loads(deployed.stdout)["run"] is None
        before = time.time()
        [scheduled] = json.loads(cli(nats_url, "configs", "ls", "--json").stdout)
        if scheduled["state"] == "scheduled":  # (not yet expired: its next firing is the next second)
            assert before < scheduled["next_firing"] <= time.time() + 1
        timers = json.loads(cli(nats_url, "schedule", "ls", "--json").stdout)  # (none once expired: 3 s)
        assert [(t["name"], t["configuration"]) for t in timers] in ([], [("config-ticking", "ticking")])

        def expired() -> list | None:
            listed = json.loads(cli(nats_url, "configs", "ls", "--json").stdout)
            return listed if listed and listed[0]["state"] == "expired" else None

        [listed] = await until(expired, timeout=60, explain=lambda: log_tails(logs))
        await asyncio.sleep(3)  # three more seconds of firings: absence has no event to wait for
        [listed] = json.loads(cli(nats_url, "configs", "ls", "--json").stdout)
        assert listed["state"] == "expired" and len(listed["runs"]) == 3 and listed["count"] == 3
        assert json.loads(cli(nats_url, "schedule", "ls", "--json").stdout) == []
        async with workflow.connect(nats_url) as client:
            info = await jsapi.request(client.nc, "STREAM.INFO.WORKFLOW", {"subjects_filter": "wf.tick.>"})
            assert sum(info["state"]["subjects"].values()) == 6  # 3 runs x 2 works, each deposited once
    finally:
        for server in servers:
            end(server)


async def test_a_step_run_by_a_real_worker_gets_the_earlier_steps_result_and_its_release_records_it(
    nats_url: str, tmp_path: Path
):
    env = env_for(nats_url)
    logs = [tmp_path / "server.log", tmp_path / "worker.log"]
    server = workflow_process(["server", "--nats", nats_url, "--data-dir", str(tmp_path / "data")], env,
                              logs[0], tmp_path)
    worker = workflow_process(["run", "chain", "--sleep", "1"], env, logs[1], tmp_path)
    try:
        await until(lambda: "resolver live" in logs[0].read_text(), timeout=60, explain=lambda: log_tails(logs))
        path = tmp_path / "flow.yaml"
        path.write_text(textwrap.dedent("""\
            name: flow
            defaults: {pipeline: chain, function: worker_functions.chain_step}
            matrix: {event: [7, 8]}
            steps:
              - name: fetch
                work: {parameters: {event: "${{ matrix.event }}"}}
              - name: use
                stage: 2
                work: {parameters: {given: "${{ steps.fetch.results.parameters }}"}}
        """))
        deployed = cli(nats_url, "configs", "deploy", str(path), "--json")
        assert deployed.returncode == 0, deployed.stderr
        run = json.loads(deployed.stdout)["run"]
        shown = await until(lambda: (lambda s: s if s["status"] == "success" else None)(ps(nats_url, "flow", run)),
                            timeout=60, explain=lambda: log_tails(logs))
        uses = [work_id for work_id, slot in shown["works"].items() if slot["step"] == "use"]
        assert len(uses) == 2
        async with workflow.connect(nats_url) as client:
            for work_id in uses:
                work = await client.get(work_id)
                event = work.results["parameters"]["given"]["event"]  # what the worker's function was given
                assert event in (7, 8)
                history = await client.history(work_id)
                [requeued] = [e for e in history if type(e).__name__ == "Requeued"]
                assert requeued.work.parameters == {"given": {"event": event}}  # recorded at release
                assert history[0].work.parameters == {"given": "${{ steps.fetch.results.parameters }}"}
    finally:
        end(worker)
        end(server)


async def test_a_step_if_fetch_failed_runs_where_fetch_failed_and_is_skipped_where_it_succeeded(
    nats_url: str, tmp_path: Path
):
    env = env_for(nats_url)
    logs = [tmp_path / "server.log", tmp_path / "worker.log"]
    server = workflow_process(["server", "--nats", nats_url, "--data-dir", str(tmp_path / "data")], env,
                              logs[0], tmp_path)
    worker = workflow_process(["run", "chain", "--sleep", "1"], env, logs[1], tmp_path)
    try:
        await until(lambda: "resolver live" in logs[0].read_text(), timeout=60, explain=lambda: log_tails(logs))
        # Given fetch fails for event 2 only, and refetch runs if (its own event's) fetch failed
        path = tmp_path / "branch.yaml"
        path.write_text(textwrap.dedent("""\
            name: branch
            defaults: {pipeline: chain, function: worker_functions.chain_step, retries: 0}
            matrix: {event: [1, 2]}
            steps:
              - name: fetch
                work: {parameters: {event: "${{ matrix.event }}", fail_when: {event: 2}}}
              - name: refetch
                stage: 2
                if: ${{ pipeline.fetch.status == 'failure' }}
                work: {parameters: {event: "${{ matrix.event }}"}}
        """))
        deployed = cli(nats_url, "configs", "deploy", str(path), "--json")
        assert deployed.returncode == 0, deployed.stderr
        run = json.loads(deployed.stdout)["run"]

        def finished() -> dict | None:
            shown = ps(nats_url, "branch", run)
            return shown if shown["status"] != "running" else None

        shown = await until(finished, timeout=90, explain=lambda: log_tails(logs))
        # Then refetch ran for event 2 (fetch failed) and was skipped for event 1, saying why
        steps = {step["name"]: step for step in shown["steps"]}
        assert steps["fetch"]["counts"] == {"success": 1, "failure": 1}
        assert steps["refetch"]["counts"] == {"success": 1, "cancelled": 1}
        assert steps["refetch"]["if"] == "${{ pipeline.fetch.status == 'failure' }}"
        async with workflow.connect(nats_url) as client:
            refetches = [w for w, slot in shown["works"].items() if slot["step"] == "refetch"]
            outcomes = {}
            for work_id in refetches:
                work = await client.get(work_id)
                [*_, decided] = [e for e in await client.history(work_id)
                                 if type(e).__name__ in ("Requeued", "Cancelled")]
                outcomes[work.parameters["event"]] = (work.status, decided.reason)
            assert outcomes == {
                1: ("cancelled", "skipped: if pipeline.fetch.status == 'failure': false (fetch success)"),
                2: ("success", "released: if pipeline.fetch.status == 'failure': true (fetch failure)"),
            }
    finally:
        end(worker)
        end(server)
