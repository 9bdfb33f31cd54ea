"""Configurations in the log against a real nats-server: deploying and removing them and a
run's start, stop and retry are events under the configuration's CAS; a run's works carry
its id and are found again from the log alone."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from conftest import eventually, running
from workflow.core import runs
from workflow.core.configs import ConfigError
from workflow.core.errors import ConflictError, NotFoundError, ValidationError
from workflow.log import configs as config_log
from workflow.log import jsapi

pytestmark = pytest.mark.timeout(90)

CHAIN = textwrap.dedent("""\
    name: chain
    matrix:
      event: [1, 2]
    steps:
      - name: fetch
        work: {pipeline: alpha, parameters: {event: "${{ matrix.event }}"}}
      - name: localise
        stage: 2
        matrix: {beam: {range: 3}}
        work: {pipeline: beta, parameters: {beam: "${{ matrix.beam }}"}}
      - name: tidy
        if: always
        work: {pipeline: beta}
""")


async def log_messages(nc, subjects: str) -> int:
    info = await jsapi.request(nc, "STREAM.INFO.WORKFLOW", {"subjects_filter": subjects})
    return sum((info["state"].get("subjects") or {}).values())


async def test_a_deploy_records_the_configuration_and_a_run_whose_works_carry_its_id(client):
    deployment = await client.deploy_config(CHAIN, file="chain.yaml")
    run = deployment.started.run
    # the events, on the configuration's own subjects
    js = client.nc.jetstream()
    assert runs.decode((await js.get_last_msg("WORKFLOW", "wf._config.chain.deployed")).data) == deployment.deployed
    assert runs.decode((await js.get_last_msg("WORKFLOW", "wf._config.chain.started")).data) == deployment.started
    assert deployment.started.works == 2 + 6 + 2
    # the works: in the log, each with the run as its parent, the first stage queued, the rest waiting
    state = await client.config_run("chain")
    assert state.run.started.run == run and len(state.slots) == 10
    for slot in state.slots:
        work = await client.get(slot.work.id)
        assert work.config["parent"] == run and work.config["step"] == slot.step
        assert work.status == ("queued" if slot.step == "fetch" else "waiting")
    view = state.view
    assert view.status == "running" and view.stage == 1
    assert [(s.name, s.counts) for s in view.steps] == [
        ("fetch", {"queued": 2}), ("localise", {"waiting": 6}), ("tidy", {"waiting": 2})]
    [listed] = await client.configs()
    assert listed.name == "chain" and list(listed.runs) == [run]


async def test_ls_run_selects_a_runs_works_through_the_results_service(client, results_service):
    first = await client.deploy_config(CHAIN)
    await client.deploy_config(CHAIN)  # a second run of the same configuration
    found = await client.results.query(parent=first.started.run, fresh=True, limit=100)
    assert sorted(w.id for w in found) == sorted(p.work.id for p in first.plan.works)
    assert await client.results.count(parent=first.started.run, fresh=True) == 10


async def test_a_file_with_problems_or_a_bad_site_writes_nothing(client, monkeypatch):
    with pytest.raises(ConfigError) as caught:
        await client.deploy_config("name: x\nsteps:\n  - {name: a, stgae: 1, work: {pipeline: p, priority: 9}}\n",
                                   file="x.yaml")
    assert len(caught.value.problems) == 2 and str(caught.value).startswith("x.yaml:3:")
    with pytest.raises(ValidationError, match="unknown site 'mars'"):
        await client.deploy_config("name: x\nsteps:\n  - {name: a, runs_on: mars, work: {pipeline: p}}\n")
    assert await log_messages(client.nc, "wf.>") == 0


async def test_remove_and_a_stale_write_are_refused_or_recorded_once(client):
    deployment = await client.deploy_config(CHAIN)
    removed = await client.remove_config("chain", reason="done")
    assert removed.deployed == deployment.deployed.id
    assert await client.configs() == []
    with pytest.raises(NotFoundError, match="no configuration named 'chain'"):
        await client.remove_config("chain")
    # a write against a stale sequence is refused by the CAS over the configuration's subjects
    seq, _ = await config_log.history(client.nc, "chain")
    stale = runs.ConfigRemoved(name="chain", time=0.0, deployed=deployment.deployed.id)
    with pytest.raises(ConflictError, match="changed meanwhile"):
        await config_log._append(client._connected.gateway, stale, seq - 1)


async def test_stop_cancels_what_has_not_finished_and_retry_replaces_it(client):
    deployment = await client.deploy_config(CHAIN)
    run = deployment.started.run
    fetch = [p.work.id for p in deployment.plan.of_step("fetch")]
    work = await client.withdraw("alpha", timeout=5)
    await client.succeed(work, {"ok": True})
    with pytest.raises(ConflictError, match="still going"):
        await client.retry_run("chain", run)
    stopped, cancelled = await client.stop_run("chain", run, reason="enough")
    assert stopped.run == run and len(cancelled) == 9 and work.id not in cancelled
    assert (await client.config_run("chain", run)).view.status == "stopped"
    with pytest.raises(ConflictError, match="already stopped"):
        await client.stop_run("chain", run)
    # retry: a new work in place of each cancelled one, waiting on the new ids, not the succeeded one
    retried = await client.retry_run("chain", run)
    assert retried.retry == 1 and set(retried.replaced) == set(cancelled)
    state = await client.config_run("chain", run)
    assert state.view.status == "running"
    assert {slot.work.id for slot in state.slots} == {work.id, *retried.replaced.values()}
    other_fetch = next(f for f in fetch if f != work.id)
    for slot in state.slots:
        if slot.step == "localise":
            assert sorted(slot.work.precursors) == sorted([work.id, retried.replaced[other_fetch]])
    assert state.statuses[retried.replaced[other_fetch]] == "queued"
    retried_work = await client.withdraw("alpha", timeout=5)
    assert retried_work.id == retried.replaced[other_fetch] and retried_work.config["replaces"] == other_fetch


async def test_the_resolver_skips_what_follows_a_failed_step_naming_it_and_releases_always(client, nats_url):
    from workflow.followers.resolver import run_resolver

    text = CHAIN + "  - name: tell\n    if: failure\n    work: {pipeline: gamma}\n"
    async with running(run_resolver, nats_url):
        deployment = await client.deploy_config(text)
        first = await client.withdraw("alpha", timeout=5)
        await client.fail(first, "error", "no data", retry=False)
        second = await client.withdraw("alpha", timeout=5)
        await client.succeed(second, {"ok": True})

        async def settled():
            state = await client.config_run("chain")
            return state if state.view.stage == "final" and "waiting" not in state.statuses.values() else None

        state = await eventually(settled, timeout=20)
    counts = {step.name: step.counts for step in state.view.steps}
    assert counts == {"fetch": {"failure": 1, "success": 1}, "localise": {"cancelled": 6},
                      "tidy": {"queued": 2}, "tell": {"queued": 2}}
    for planned in deployment.plan.of_step("localise"):
        [*_, last] = await client.history(planned.work.id)
        assert last.reason == f"skipped: step fetch failed (precursor {first.id})"
    for planned in deployment.plan.of_step("tell"):
        [*_, last] = await client.history(planned.work.id)
        assert last.reason.startswith("released: precursors finished (if failure; 7 did not succeed")


async def test_a_step_gets_the_results_of_the_step_before_and_its_release_event_records_them(client, nats_url):
    from workflow.core import events as ev
    from workflow.followers.resolver import run_resolver

    text = textwrap.dedent("""\
        name: flow
        matrix: {event: [1, 2]}
        steps:
          - name: fetch
            work: {pipeline: alpha, parameters: {event: "${{ matrix.event }}"}}
          - name: localise
            stage: 2
            work: {pipeline: beta, parameters: {path: "${{ steps.fetch.results.path }}"}}
          - name: summary
            stage: 3
            work: {pipeline: beta, parameters: {snrs: "${{ steps.localise.results.snr }}"}}
    """)
    async with running(run_resolver, nats_url):
        deployment = await client.deploy_config(text)
        localise = {p.combination["event"]: p.work.id for p in deployment.plan.of_step("localise")}
        for _ in range(2):
            fetch = await client.withdraw("alpha", timeout=5)
            await client.succeed(fetch, {"path": f"/data/{fetch.parameters['event']}.h5"})
        released = [await client.withdraw("beta", timeout=10) for _ in range(2)]
        # the work that runs was given the value, and the event that released it records it
        for work in released:
            assert work.parameters == {"path": f"/data/{_event_of(localise, work.id)}.h5"}
            requeued = next(e for e in await client.history(work.id) if isinstance(e, ev.Requeued))
            assert requeued.work.parameters == work.parameters
        await client.succeed(released[0], {"snr": 7.5})
        await client.succeed(released[1], {"other": 1})  # no `snr`: that summary cannot run on a guess
        summaries = {p.combination["event"]: p.work.id for p in deployment.plan.of_step("summary")}
        good, bad = (summaries[_event_of(localise, work.id)] for work in released)

        async def summaries_resolved():
            heads = [await client.head(work_id) for work_id in (good, bad)]
            return heads if all(isinstance(h.event, (ev.Requeued, ev.Cancelled)) for h in heads) else None

        good_head, bad_head = await eventually(summaries_resolved, timeout=20)
    assert isinstance(good_head.event, ev.Requeued) and good_head.event.work.parameters == {"snrs": 7.5}
    assert isinstance(bad_head.event, ev.Cancelled)
    assert bad_head.event.reason == ("skipped: its inputs could not be read: parameters: step localise gave no "
                                     f"result 'snr' (work {released[1].id}: ['other'])")


def _event_of(localise: dict[int, str], work_id: str) -> int:
    return next(event for event, planned in localise.items() if planned == work_id)


async def test_a_scheduled_configuration_under_two_schedulers_runs_count_times_then_expires(client, nats_url):
    from workflow.followers.scheduler import run_scheduler

    text = ("name: ticking\nschedule: {cron: '* * * * * *', count: 3}\n"  # every second (6 fields)
            "steps:\n  - {name: a, matrix: {i: [1, 2]}, work: {pipeline: alpha, parameters: {i: '${{ matrix.i }}'}}}\n")
    async with running(run_scheduler, nats_url, count=2):
        deployment = await client.deploy_config(text)
        assert deployment.started is None  # no run now: at the firings
        assert [d.added.name for d in await client.schedules()] == ["config-ticking"]

        async def expired():
            [listed] = await client.configs()
            return listed if listed.state == "expired" and not await client.schedules() else None

        listed = await eventually(expired, timeout=30)
        # And no run after the third (watched for three firings: absence has no event to wait for)
        await asyncio.sleep(3)
    _, folded = await config_log.history(client.nc, "ticking")
    assert len(folded.runs) == 3 and listed.current.count == 3
    for run in folded.runs.values():
        state = await client.config_run("ticking", run.started.run)
        assert [slot.work.config["parent"] for slot in state.slots] == [run.started.run] * 2
        assert sorted(state.statuses.values()) == ["queued", "queued"]
    assert await log_messages(client.nc, "wf.alpha.>") == 6  # 3 runs x 2 works, each deposited once


def test_the_projector_keeps_configuration_events_in_other_and_rejects_none():
    from workflow.results import database
    from workflow.results.projector import Projector

    deployed = runs.ConfigDeployed(name="chain", time=1.0, source=CHAIN)
    started = runs.RunStarted(name="chain", time=1.0, run="01JRUN", deployed=deployed.id, works=10)
    con = database.connect(":memory:")
    Projector(con).apply([(seq, 1.0, runs.event_subject(event), runs.encode(event))
                          for seq, event in enumerate((deployed, started), start=1)])
    assert con.execute("SELECT seq, subject FROM other ORDER BY seq").fetchall() == [
        (1, "wf._config.chain.deployed"), (2, "wf._config.chain.started")]
    assert con.execute("SELECT count(*) FROM rejected").fetchall() == [(0,)]


def test_the_metrics_count_no_configuration_event_as_a_works():
    from workflow.results.metrics import EventCounts

    counts = EventCounts()
    started = runs.RunStarted(name="chain", time=1.0, run="01JRUN", deployed="d", works=10)
    counts.add(runs.event_subject(started), runs.encode(started), 1)  # wf._config.chain.started
    assert counts.counts == {}


async def test_a_resolver_started_after_a_step_failed_skips_what_followed_it(client, nats_url):
    from workflow.followers.resolver import run_resolver

    deployment = await client.deploy_config(CHAIN)  # no resolver yet
    first = await client.withdraw("alpha", timeout=5)
    await client.fail(first, "error", "no data", retry=False)
    localise = [p.work.id for p in deployment.plan.of_step("localise")]
    async with running(run_resolver, nats_url):

        async def skipped():
            heads = [await client.head(work_id) for work_id in localise]
            return heads if all(type(h.event).__name__ == "Cancelled" for h in heads) else None

        heads = await eventually(skipped, timeout=20)
    assert {h.event.reason for h in heads} == {f"skipped: step fetch failed (precursor {first.id})"}


async def test_a_scheduled_configuration_records_its_time_zone_in_its_deployment_and_its_schedule(client):
    text = ("name: local\nschedule: {cron: '0 2 * * *', timezone: America/Vancouver}\n"
            "steps:\n  - {name: a, work: {pipeline: alpha}}\n")
    deployment = await client.deploy_config(text)
    assert deployment.started is None and deployment.deployed.timezone == "America/Vancouver"
    [schedule] = await client.schedules()
    assert schedule.added.name == "config-local" and schedule.added.schedule == "0 0 2 * * *"
    assert schedule.added.timezone == "America/Vancouver"
    [listed] = await client.configs()
    assert listed.current is not None and listed.current.timezone == "America/Vancouver"
