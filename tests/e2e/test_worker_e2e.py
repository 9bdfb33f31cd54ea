"""``workflow run`` as real processes against a real nats-server: crashes, retries,
timeouts, cancel, shutdown. Leases are 1.5 s and backoff 0.1 s (tests/conftest.py), and
the worker subprocesses get the same environment, so redelivery after a SIGKILL is quick.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from deployed import until

import workflow
from workflow import Work
from workflow.core import events as ev

HERE = Path(__file__).parent
pytestmark = pytest.mark.timeout(90)


def worker_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["WORKFLOW_NATS_URL"] = url
    env["WORKFLOW_LEASE_SECONDS"] = os.environ.get("WORKFLOW_LEASE_SECONDS", "1.5")
    env["WORKFLOW_RETRY_BACKOFF"] = os.environ.get("WORKFLOW_RETRY_BACKOFF", "0.1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


class WorkerProcess(subprocess.Popen[bytes]):
    """A ``workflow run`` subprocess, and the file its output goes to."""

    log_path: Path


@pytest.fixture
def start_worker(nats_url: str, tmp_path: Path):
    """Start ``workflow run PIPELINE --sleep 1 ARGS…`` as a subprocess (killed at the end)."""
    processes: list[WorkerProcess] = []

    def start(*args: str, pipeline: str = "e2e", new_session: bool = False) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(processes)}.log"
        with open(log_path, "wb") as log:  # the worker keeps its own descriptor
            process = WorkerProcess(
                [sys.executable, "-m", "workflow.cli", "run", pipeline, "--sleep", "1", *args],
                env=worker_env(nats_url), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                start_new_session=new_session,
            )
        process.log_path = log_path
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


async def wait_exit(process: subprocess.Popen, timeout: float = 30) -> int:
    return await asyncio.to_thread(process.wait, timeout)




def status_is(client: workflow.Client, work_id: str, *statuses: str):
    async def check():
        work = await client.get(work_id)
        return work if work.status in statuses else None
    return check


def pids_in(marker: Path) -> list[int]:
    return [int(line) for line in marker.read_text().split()] if marker.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def names(events: list[ev.AnyEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def failures(events: list[ev.AnyEvent]) -> list[ev.Failed]:
    return [e for e in events if isinstance(e, ev.Failed)]


async def test_a_sigkilled_worker_loses_its_attempt_and_another_worker_finishes_every_work_exactly_once(
    client, start_worker, tmp_path
):
    marker = tmp_path / "pids"
    ids = await client.deposit([
        Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 3, "marker": str(marker)}),
        Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 0.2}),
        Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 0.2}),
    ])
    first = start_worker()
    await until(lambda: pids_in(marker))
    [child] = pids_in(marker)
    first.kill()  # SIGKILL mid-work: no chance to record anything
    await wait_exit(first)
    # The function's process dies with its worker (forkserver gone, PDEATHSIG): it does
    # not run on unobserved next to the attempt that replaces it.
    await until(lambda: not alive(child), timeout=10)

    start_worker("--concurrency", "2")
    for work_id in ids:
        await until(status_is(client, work_id, "success", "failure"))
    for work_id in ids:
        events = await client.history(work_id)
        assert names(events).count("Succeeded") == 1, names(events)
    crashed = await client.history(ids[0])
    assert names(crashed) == ["Deposited", "Started", "Failed", "Started", "Succeeded"]
    lost = crashed[2]
    assert lost.reason == "lost" and lost.will_retry and lost.attempt == 1
    assert crashed[-1].attempt == 2 and len(pids_in(marker)) == 2


async def test_a_function_that_raises_is_retried_with_backoff_then_failed_for_good_with_its_traceback(
    client, start_worker
):
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.raises", retries=2,
                                          parameters={"message": "bad input"}))
    start_worker()
    await until(status_is(client, work_id, "failure"))
    events = await client.history(work_id)
    assert names(events) == ["Deposited"] + ["Started", "Failed"] * 3
    failed = failures(events)
    assert [f.will_retry for f in failed] == [True, True, False]
    assert [f.retry_in for f in failed] == [pytest.approx(0.1), pytest.approx(0.2), None]
    for f in failed:
        assert f.reason == "error" and f.error == "ValueError: bad input"
        assert 'raise ValueError(message)' in f.traceback
    work = await client.get(work_id)
    assert work.results["error"] == "ValueError: bad input" and "Traceback" in work.results["traceback"]


async def test_a_hung_function_is_killed_at_its_timeout_and_retried_while_retries_remain(
    client, start_worker, tmp_path
):
    marker = tmp_path / "pids"
    # 3 s, not 1: a fresh worker's first work also waits for the forkserver to preload
    # workflow (about a second on a busy machine), and the child must have started.
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.slow", timeout=3, retries=1,
                                          parameters={"seconds": 120, "marker": str(marker)}))
    worker = start_worker()
    await until(status_is(client, work_id, "failure"), timeout=60)
    events = await client.history(work_id)
    assert names(events) == ["Deposited"] + ["Started", "Failed"] * 2
    failed = failures(events)
    assert [(f.attempt, f.reason, f.will_retry) for f in failed] == [(1, "timeout", True), (2, "timeout", False)]
    assert failed[0].retry_in == pytest.approx(0.1)
    assert all("ran past its timeout of 3s" in f.error for f in failed)
    children = pids_in(marker)
    assert len(children) == 2  # each attempt ran in its own child, and each was killed
    for child in children:
        await until(lambda child=child: not alive(child), timeout=10)
    assert worker.poll() is None  # the worker lives on


async def test_a_work_whose_retry_on_leaves_out_timeout_fails_for_good_at_its_first_timeout(
    client, start_worker, tmp_path
):
    marker = tmp_path / "pids"
    [work_id] = await client.deposit(Work(
        pipeline="e2e", function="worker_functions.slow", timeout=3, retries=2, config={"retry_on": ["error"]},
        parameters={"seconds": 120, "marker": str(marker)},
    ))
    start_worker()
    await until(status_is(client, work_id, "failure"), timeout=60)
    events = await client.history(work_id)
    assert names(events) == ["Deposited", "Started", "Failed"]
    [failed] = failures(events)
    assert (failed.reason, failed.will_retry) == ("timeout", False)
    [child] = pids_in(marker)
    await until(lambda: not alive(child), timeout=10)


@pytest.mark.parametrize("isolation", ["process", "none"])
async def test_a_function_that_kills_its_own_process_ends_failed_after_its_retries(
    client, start_worker, tmp_path, isolation
):
    marker = tmp_path / "pids"
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.exits", retries=1,
                                          parameters={"code": 3, "marker": str(marker)}))
    if isolation == "process":
        worker = start_worker()
        await until(status_is(client, work_id, "failure"))
        failed = failures(await client.history(work_id))
        assert [(f.reason, f.will_retry) for f in failed] == [("error", True), ("error", False)]
        assert "exited with code 3" in failed[0].error
        assert worker.poll() is None  # the worker survived its children
    else:
        # In the worker's own process, os._exit takes the worker with it: each next
        # worker records the lost attempt, and the retries bound how often that happens.
        for _ in range(3):
            worker = start_worker("--isolation", "none")

            async def exited_or_failed(worker=worker):
                return worker.poll() is not None or (await client.get(work_id)).status == "failure"

            await until(exited_or_failed)
            if worker.poll() is None:
                break
            assert worker.returncode == 3, "the worker should die with the function's exit code"
        await until(status_is(client, work_id, "failure"))
        failed = failures(await client.history(work_id))
        assert [(f.reason, f.will_retry) for f in failed] == [("lost", True), ("lost", False)]
    assert len(pids_in(marker)) == 2  # exactly retries + 1 attempts ran


async def test_command_works_record_output_and_return_code_and_fail_on_a_non_zero_exit(client, start_worker):
    ok, bad = await client.deposit([
        Work(pipeline="e2e",
             command=[sys.executable, "-c", "import os; print('hello', os.environ['WORKFLOW_ATTEMPT'])"]),
        Work(pipeline="e2e", retries=0,
             command=[sys.executable, "-c", "import sys; print('oops', file=sys.stderr); sys.exit(4)"]),
    ])
    start_worker()
    done = await until(status_is(client, ok, "success"))
    assert done.results["returncode"] == 0 and done.results["stdout"] == "hello 1\n"
    failed = await until(status_is(client, bad, "failure"))
    assert failed.results["returncode"] == 4 and failed.results["stderr"] == "oops\n"
    assert failed.results["error"] == "command exited with code 4"


async def test_async_functions_are_awaited_and_tuples_give_results_products_and_plots(client, start_worker):
    summed, shaped = await client.deposit([
        Work(pipeline="e2e", function="worker_functions.async_sum", parameters={"a": 1, "b": 2.5}),
        # bypass: the paths are recorded as returned (they name no real files to archive)
        Work(pipeline="e2e", function="worker_functions.products",
             config={"archive": {"products": "bypass", "plots": "bypass"}}),
    ])
    start_worker("--isolation", "thread")
    assert (await until(status_is(client, summed, "success"))).results == {"sum": 3.5}
    work = await until(status_is(client, shaped, "success"))
    assert (work.results, work.products, work.plots) == ({"ok": True}, ["/data/a.fits"], ["/plots/a.png"])


async def test_unknown_functions_and_oversized_results_fail_at_once_with_a_clear_reason(client, start_worker):
    unknown, large = await client.deposit([
        Work(pipeline="e2e", function="worker_functions.nope"),
        Work(pipeline="e2e", function="worker_functions.huge", parameters={"megabytes": 9}),
    ])
    start_worker()
    await until(status_is(client, unknown, "failure"))
    await until(status_is(client, large, "failure"))
    [failed] = failures(await client.history(unknown))
    assert (failed.reason, failed.will_retry) == ("unrunnable", False)
    assert "worker_functions has no nope" in failed.error
    [failed] = failures(await client.history(large))
    assert (failed.reason, failed.will_retry) == ("too-large", False)
    assert "bytes" in failed.error and "not recorded" in failed.error


async def test_sigterm_lets_the_running_work_finish_then_the_worker_exits_zero(client, start_worker, tmp_path):
    marker = tmp_path / "pids"
    running, waiting = await client.deposit([
        Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 1.5, "marker": str(marker)}),
        Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 0.1}, priority=1),
    ])
    worker = start_worker()
    await until(lambda: pids_in(marker))
    worker.send_signal(signal.SIGTERM)
    assert await wait_exit(worker) == 0
    assert (await client.get(running)).status == "success"
    assert (await client.get(waiting)).status == "queued"  # not taken after the signal


async def test_sigterm_to_the_whole_process_group_still_lets_the_running_work_finish(client, start_worker, tmp_path):
    # Supervisors often signal the worker's whole group: the forkserver must not die of it.
    marker = tmp_path / "pids"
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.slow",
                                          parameters={"seconds": 1.5, "marker": str(marker)}))
    worker = start_worker(new_session=True)
    await until(lambda: pids_in(marker))
    os.killpg(worker.pid, signal.SIGTERM)
    assert await wait_exit(worker) == 0
    assert names(await client.history(work_id)) == ["Deposited", "Started", "Succeeded"]


async def test_a_second_signal_gives_the_running_work_back_at_once(client, start_worker, tmp_path):
    marker = tmp_path / "pids"
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.slow",
                                          parameters={"seconds": 120, "marker": str(marker)}))
    worker = start_worker()
    await until(lambda: pids_in(marker))
    worker.send_signal(signal.SIGINT)
    await until(lambda: "taking no more" in worker.log_path.read_text())  # the first signal was heard
    worker.send_signal(signal.SIGINT)
    assert await wait_exit(worker) == 128 + signal.SIGINT
    [failed] = failures(await client.history(work_id))
    assert (failed.reason, failed.will_retry, failed.retry_in) == ("interrupted", True, 0.0)
    assert not alive(pids_in(marker)[0])
    assert (await client.get(work_id)).status == "queued"


async def test_cancelling_a_running_work_kills_it_and_records_nothing_more(client, start_worker, tmp_path):
    marker = tmp_path / "pids"
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.slow",
                                          parameters={"seconds": 120, "marker": str(marker)}))
    worker = start_worker()
    await until(lambda: pids_in(marker))
    await client.cancel(work_id, reason="wrong parameters")
    [child] = pids_in(marker)
    await until(lambda: not alive(child), timeout=10)
    await asyncio.sleep(2)  # more than a lease: nothing else may be recorded
    assert names(await client.history(work_id)) == ["Deposited", "Started", "Cancelled"]
    assert worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    assert await wait_exit(worker) == 0
    assert "cancelled" in worker.log_path.read_text()


async def test_the_readme_demo_runs_the_seeds_add_against_a_workflow_server_process(tmp_path):
    env = worker_env("")
    with open(tmp_path / "server.log", "wb") as server_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "workflow.cli", "server", "--port", "-1", "--data-dir", str(tmp_path / "data"),
             "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=server_log, text=True, env=env,
        )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 60)
        match = re.search(r"workflow server ready on (nats://\S+)", line)
        assert match, f"server said {line!r}; log: {(tmp_path / 'server.log').read_text()[-2000:]}"
        url = match.group(1)
        async with workflow.connect(url) as client:
            ids = await client.deposit(
                [Work(pipeline="sample-pipeline", parameters={"a": a, "b": 2}) for a in range(3)]
            )
            worker = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "workflow.cli", "run", "sample-pipeline", "--function", "workflow.examples.add",
                 "--lives", "3", "--sleep", "1", "--nats", url],
                env=env, capture_output=True, text=True, timeout=60,
            )
            assert worker.returncode == 0, (
                f"worker: {worker.stderr[-2000:]}\nserver: {(tmp_path / 'server.log').read_text()[-2000:]}"
            )
            assert [(await client.get(i)).results for i in ids] == [{"value": 2}, {"value": 3}, {"value": 4}]
            lines = [line for line in worker.stderr.splitlines() if " finish " in line]
            assert len(lines) == 3 and all(re.search(r"attempt=1 outcome=success duration=\d", line) for line in lines)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def test_a_frozen_worker_that_comes_back_after_its_work_was_handed_on_records_nothing(
    client, start_worker, tmp_path
):
    marker = tmp_path / "pids"
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.slow",
                                          parameters={"seconds": 2, "marker": str(marker)}))
    zombie = start_worker()
    await until(lambda: pids_in(marker))
    zombie.send_signal(signal.SIGSTOP)  # alive but silent: its lease runs out
    try:
        start_worker()
        await until(status_is(client, work_id, "success"))
    finally:
        zombie.send_signal(signal.SIGCONT)
    # the zombie wakes, its child has finished: it tries to report, and is refused
    await until(lambda: any(said in zombie.log_path.read_text() for said in ("nothing recorded", "not recorded")))
    events = await client.history(work_id)
    assert names(events) == ["Deposited", "Started", "Failed", "Started", "Succeeded"]
    assert events[2].reason == "lost" and events[-1].by == events[3].by != events[1].by
    assert zombie.poll() is None


async def test_concurrency_runs_several_works_at_once_in_one_worker(client, start_worker):
    ids = await client.deposit([
        Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 2}) for _ in range(3)
    ])
    start_worker("--concurrency", "3", "--lives", "3")
    records = []
    for work_id in ids:
        await until(status_is(client, work_id, "success"))
        records += await client.history_records(work_id)
    records.sort(key=lambda r: r.seq)
    kinds = [type(r.event).__name__ for r in records if not isinstance(r.event, ev.Deposited)]
    assert kinds == ["Started"] * 3 + ["Succeeded"] * 3  # all three ran side by side
    assert len({r.event.by for r in records if isinstance(r.event, ev.Started)}) == 1


async def test_timeouts_stop_commands_and_main_thread_functions_too(client, start_worker, tmp_path):
    marker = tmp_path / "pids"
    hang = f"import os, time; open({str(marker)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(120)"
    command, function = await client.deposit([
        Work(pipeline="e2e", timeout=1, priority=5, retries=0, command=[sys.executable, "-c", hang]),
        Work(pipeline="e2e", function="worker_functions.slow", timeout=1, parameters={"seconds": 120}, priority=1,
             retries=0),
    ])
    worker = start_worker("--isolation", "none", "--lives", "2")
    await until(status_is(client, command, "failure"))
    [failed] = failures(await client.history(command))
    assert failed.reason == "timeout" and "the command's process group was killed" in failed.error
    await until(lambda: not alive(pids_in(marker)[0]), timeout=10)
    await until(status_is(client, function, "failure"))
    [failed] = failures(await client.history(function))
    assert failed.reason == "timeout" and "it was interrupted" in failed.error
    assert await wait_exit(worker) == 0  # the main thread was freed: the worker ends its 2 lives


async def test_a_result_finished_while_nats_is_down_is_recorded_once_it_is_back(tmp_path):
    import socket

    from workflow.server import EmbeddedNats, prepare_log

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = EmbeddedNats(tmp_path / "nats", port=port).start()
    worker = None
    try:
        await prepare_log(server.url)
        marker = tmp_path / "pids"
        async with workflow.connect(server.url) as client:
            [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.slow",
                                                  parameters={"seconds": 2, "marker": str(marker)}))
        with open(tmp_path / "worker.log", "wb") as worker_log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "workflow.cli", "run", "e2e", "--sleep", "1"], env=worker_env(server.url),
                stdout=worker_log, stderr=subprocess.STDOUT, cwd=tmp_path,
            )
        await until(lambda: pids_in(marker))
        server.kill()  # the whole log goes away while the work runs, and its result is due
        await asyncio.sleep(3)
        server = EmbeddedNats(tmp_path / "nats", port=port).start()
        async with workflow.connect(server.url) as client:
            await until(status_is(client, work_id, "success"), timeout=40)
            assert names(await client.history(work_id)) == ["Deposited", "Started", "Succeeded"]
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        server.stop()


async def test_a_work_longer_than_several_leases_is_never_handed_to_another_worker_while_its_worker_lives(
    client, start_worker, tmp_path
):
    marker = tmp_path / "pids"
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.slow",
                                          parameters={"seconds": 5, "marker": str(marker)}))  # > 3 leases of 1.5 s
    start_worker()
    await until(lambda: pids_in(marker))
    start_worker()  # idle and eager: it would take the work if it were ever redelivered
    await until(status_is(client, work_id, "success"))
    assert names(await client.history(work_id)) == ["Deposited", "Started", "Succeeded"]
    assert len(pids_in(marker)) == 1


async def test_the_function_may_follow_the_pipeline_as_in_the_old_cli(client, start_worker):
    [work_id] = await client.deposit(Work(pipeline="e2e", parameters={"a": 20, "b": 22}))
    worker = start_worker("workflow.examples.add", "--lives", "1")
    assert await wait_exit(worker) == 0
    assert (await client.get(work_id)).results == {"value": 42}


async def test_a_works_process_does_not_import_the_workers_command_line(client, start_worker):
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.imported",
                                          parameters={"module": "typer"}))
    start_worker("--lives", "1")
    assert (await until(status_is(client, work_id, "success"))).results == {"imported": False}


async def test_processes_a_function_leaves_behind_end_with_its_work(client, start_worker, tmp_path):
    marker = tmp_path / "pids"
    [work_id] = await client.deposit(Work(pipeline="e2e", function="worker_functions.leaves_a_background_process",
                                          parameters={"marker": str(marker)}))
    start_worker()
    await until(status_is(client, work_id, "success"))
    [background] = pids_in(marker)
    await until(lambda: not alive(background), timeout=10)


async def test_the_workers_command_option_runs_for_every_work_with_the_work_in_its_environment(client, start_worker):
    [work_id] = await client.deposit(Work(pipeline="e2e", parameters={"band": [400, 800]}))
    script = (
        "import json, os; "
        "print(json.loads(os.environ['WORKFLOW_PARAMETERS'])['band'][1], os.environ['WORKFLOW_WORK_ID'])"
    )
    start_worker("--command", f"{sys.executable} -c \"{script}\"", "--lives", "1")
    work = await until(status_is(client, work_id, "success"))
    assert work.results["stdout"] == f"800 {work_id}\n"


async def test_a_batch_held_by_a_sigkilled_worker_is_redelivered_and_each_work_finished_exactly_once(
    client, start_worker, tmp_path
):
    marker = tmp_path / "pids"
    ids = await client.deposit([
        Work(pipeline="e2e", function="worker_functions.slow", parameters={"seconds": 3, "marker": str(marker)})
        for _ in range(4)
    ])
    first = start_worker("--isolation", "thread", "--concurrency", "4")
    await until(lambda: len(pids_in(marker)) == 4)  # the whole batch is running
    first.kill()
    await wait_exit(first)
    start_worker("--concurrency", "4")
    for work_id in ids:
        await until(status_is(client, work_id, "success", "failure"))
    for work_id in ids:
        events = await client.history(work_id)
        assert names(events) == ["Deposited", "Started", "Failed", "Started", "Succeeded"], names(events)
        assert events[2].reason == "lost"


async def test_max_works_per_child_recycles_the_warm_children(client, start_worker):
    ids = await client.deposit([Work(pipeline="e2e", function="os.getpid") for _ in range(6)])
    start_worker("--max-works-per-child", "2", "--lives", "6")
    pids = []
    for work_id in ids:
        pids.append((await until(status_is(client, work_id, "success"))).results["value"])
    assert len(set(pids)) == 3 and all(pids.count(pid) == 2 for pid in pids)
