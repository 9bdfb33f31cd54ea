"""``workflow scale``: worker jobs on Slurm that follow the depth of the buckets.

Every ``interval`` seconds the scaler reads each configured pipeline's depth at its site
(works waiting and held, from the buckets: :meth:`workflow.log.client.Client.buckets`, the
function ``workflow buckets`` prints, so what counts as waiting is decided in one place),
reads the jobs it owns from Slurm (:mod:`.slurm`), and submits or cancels jobs as
:func:`workflow.core.scaling.decide` says: a job array of ``workflow run PIPELINE --lives N``
per submission.

**Its own process, not a follower inside ``workflow server``.** It must run where ``sbatch``
works, with the user's Slurm account and credentials: a cluster's login node, one scaler per
cluster (site), while the server runs at the telescope. A Slurm command that hangs or fails
then stalls only the scaler, never the projector or the resolver. It keeps no state worth
losing: the jobs are read from Slurm at every look, so a restarted scaler (``kill -9``, a
reboot of the login node) goes on with the jobs the last one submitted, submitting none
twice. Only the idle clock is in memory; a restart starts it again, which delays a scale-down
and never causes one.

Like the server's followers it starts again after a failure (:mod:`.restarts`): NATS away,
a refused request. A failing Slurm command skips one look and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workflow.core.scaling import Decision, Depth, decide
from workflow.followers.restarts import restarting
from workflow.followers.scale_config import ScaleConfig
from workflow.followers.slurm import OwnedJob, Slurm, SlurmError
from workflow.log.client import Client

log = logging.getLogger("workflow.scale")


@dataclass(frozen=True)
class Step:
    """What one look decided and did for a pipeline."""

    pipeline: str
    depth: Depth
    jobs: int
    decision: Decision
    submitted: str | None = None  # the array job id


class Scaler:
    """Looks at the buckets and the queue and acts (:meth:`look`), every interval (:meth:`run`)."""

    def __init__(
        self, config: ScaleConfig, client: Client, slurm: Slurm, url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.client = client
        self.slurm = slurm
        self.url = url
        self._clock = clock
        started = clock()
        self._busy_at = dict.fromkeys(config.pipelines, started)  # last look with work waiting or held

    async def depths(self) -> dict[str, Depth]:
        """Each configured pipeline's works waiting and held at this scaler's site."""
        waiting = dict.fromkeys(self.config.pipelines, 0)
        held = dict.fromkeys(self.config.pipelines, 0)
        for bucket in await self.client.buckets():
            if bucket.site == self.config.site and bucket.pipeline in waiting:
                # works that can run, from the read model; without a results service, the
                # messages not yet drained (an upper bound: cancelled works count until drained)
                waiting[bucket.pipeline] += bucket.undelivered if bucket.waiting is None else bucket.waiting
                held[bucket.pipeline] += bucket.held
        return {pipeline: Depth(waiting[pipeline], held[pipeline]) for pipeline in self.config.pipelines}

    async def owned_jobs(self) -> dict[str, list[OwnedJob]]:
        jobs: dict[str, list[OwnedJob]] = {pipeline: [] for pipeline in self.config.pipelines}
        for job in await self.slurm.jobs():
            if job.site == self.config.site and job.pipeline in jobs:
                jobs[job.pipeline].append(job)
        return jobs

    async def look(self) -> list[Step]:
        """One round: read the depths and the jobs, decide, submit and cancel."""
        depths = await self.depths()
        jobs = await self.owned_jobs()
        now = self._clock()
        steps = []
        for pipeline, scale in self.config.pipelines.items():
            depth = depths[pipeline]
            if not depth.idle:
                self._busy_at[pipeline] = now
            decision = decide(scale.limits(pipeline), depth, [job.as_job() for job in jobs[pipeline]],
                              idle_for=now - self._busy_at[pipeline], idle_after=self.config.idle)
            steps.append(await self._act(pipeline, depth, len(jobs[pipeline]), decision))
        return steps

    async def _act(self, pipeline: str, depth: Depth, jobs: int, decision: Decision) -> Step:
        submitted = None
        if decision.cancel:
            log.info("%s: cancelling %d job(s) (%s): %s", pipeline, len(decision.cancel), decision.why,
                     " ".join(decision.cancel))
            await self.slurm.cancel(decision.cancel)
        if decision.submit:
            submitted = await self.slurm.submit(
                self.config.script(pipeline, self.url), decision.submit, site=self.config.site, pipeline=pipeline,
                options=self.config.resources_of(pipeline).sbatch_options(), output=self.config.output,
            )
            log.info("%s: submitted %d job(s) as array %s (%s)", pipeline, decision.submit, submitted, decision.why)
        return Step(pipeline, depth, jobs, decision, submitted)

    async def run(self, stop: asyncio.Event) -> None:
        """Look every interval until ``stop`` is set; a failing Slurm command skips a look."""
        log.info("scaling %s at site %s on Slurm (owner %s), every %g s, idle after %g s",
                 ", ".join(self.config.pipelines), self.config.site, self.slurm.owner, self.config.interval,
                 self.config.idle)
        while not stop.is_set():
            try:
                await self.look()
            except SlurmError as error:
                log.warning("this look is skipped: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.interval)


async def run_scaler(config: ScaleConfig, stop: asyncio.Event, **connect_options: Any) -> None:
    """Run a scaler until ``stop`` is set (``workflow scale``); after a failure (NATS away)
    it starts again, reading the jobs from Slurm (:mod:`workflow.followers.restarts`)."""
    url = connect_options.pop("url", None)
    async with Client(url, name=connect_options.pop("name", "workflow-scale"), **connect_options) as client:
        slurm, url = Slurm(config.name), config.nats or client.url
        await restarting("scaler", lambda: Scaler(config, client, slurm, url=url).run(stop), stop, log)
