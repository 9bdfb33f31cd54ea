"""How many worker jobs a pipeline needs: the autoscaler's rule, pure (no Slurm, no NATS).

``workflow scale`` (:mod:`workflow.followers.scaler`) looks, every few seconds, at each
pipeline's bucket depth at its site and at the worker jobs it owns on the batch system, and
asks :func:`decide` what to do. The rule:

- **Up, never past what the queue can use.** Every work waiting or held needs a slot; the
  jobs owned give ``works_per_job`` slots each (a job's worker concurrency), pending or
  running. Works beyond those slots need new jobs, up to ``maximum`` jobs in all; never
  fewer than ``minimum``. A job waiting in the batch queue counts, so a deposit is answered
  once, not at every look while the jobs wait for nodes; a held work beyond the running
  jobs' slots lost its worker (a job cancelled or killed mid-work) and gets a job for its
  next attempt. (Works held by workers the scaler did not start count too: it may start a
  few jobs more than needed, never more than ``maximum``.)
- **Down to the minimum after an idle time.** When nothing has waited or been held for
  ``idle_after`` seconds, the jobs beyond ``minimum`` are cancelled, pending ones first.
  Jobs are never cancelled while works are held (one of them may be running a work);
  ``workflow run --lives N`` ends a worker by itself after N works.
- **A lowered maximum** cancels only pending jobs beyond it: running ones finish their lives.

Everything the rule needs is passed in, so a restarted scaler that re-reads its jobs from the
batch system decides as the one before it would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workflow.core.errors import ValidationError


@dataclass(frozen=True)
class Limits:
    """A pipeline's bounds at a site: ``minimum`` to ``maximum`` jobs, each running a
    worker that takes ``works_per_job`` works at once."""

    minimum: int = 0
    maximum: int = 1
    works_per_job: int = 1

    def check(self, pipeline: str) -> Limits:
        if self.minimum < 0:
            raise ValidationError(f"scale.pipelines.{pipeline}.min", f"expected >= 0, got {self.minimum}")
        if self.maximum < max(self.minimum, 1):
            raise ValidationError(
                f"scale.pipelines.{pipeline}.max", f"expected >= 1 and >= min ({self.minimum}), got {self.maximum}"
            )
        if self.works_per_job < 1:
            raise ValidationError(f"scale.pipelines.{pipeline}.concurrency", f"expected >= 1, got {self.works_per_job}")
        return self


@dataclass(frozen=True)
class Depth:
    """A pipeline's works at a site: ``waiting`` for a worker, ``held`` by one (running, or
    between attempts)."""

    waiting: int = 0
    held: int = 0

    @property
    def idle(self) -> bool:
        return self.waiting == 0 and self.held == 0


@dataclass(frozen=True)
class Job:
    """A worker job the scaler owns (an array task is a job of its own)."""

    job_id: str
    pending: bool  # waiting in the batch queue; otherwise running (or starting)


@dataclass(frozen=True)
class Decision:
    """What to do now: submit ``submit`` new jobs, cancel the jobs ``cancel`` names."""

    submit: int = 0
    cancel: tuple[str, ...] = ()
    why: str = ""


def decide(limits: Limits, depth: Depth, jobs: list[Job], idle_for: float, idle_after: float) -> Decision:
    """What a pipeline needs now (see the module's rule). ``idle_for``: seconds since the
    pipeline last had a work waiting or held (0 if it has one now)."""
    pending = [job for job in jobs if job.pending]
    running = [job for job in jobs if not job.pending]
    per_job = limits.works_per_job
    if len(jobs) > limits.maximum and pending:
        surplus = min(len(jobs) - limits.maximum, len(pending))
        return Decision(cancel=_newest_first(pending)[:surplus],
                        why=f"{len(jobs)} jobs, more than the maximum of {limits.maximum}")
    if len(jobs) < limits.minimum:
        return Decision(submit=limits.minimum - len(jobs), why=f"{len(jobs)} jobs, fewer than the minimum")
    if depth.idle:
        surplus = len(jobs) - limits.minimum
        if surplus > 0 and idle_for >= idle_after:
            order = _newest_first(pending) + _newest_first(running)
            return Decision(cancel=order[:surplus], why=f"nothing waiting or running for {idle_for:.0f} s")
        return Decision()
    # Every work waiting or held needs a slot: held works beyond the running jobs' slots lost
    # their worker (a job cancelled or killed mid-work) and come back when their lease ends.
    uncovered = depth.waiting + depth.held - len(jobs) * per_job
    if uncovered <= 0:
        return Decision()
    wanted = min(math.ceil(uncovered / per_job), limits.maximum - len(jobs))
    if wanted <= 0:
        return Decision()
    return Decision(submit=wanted, why=f"{depth.waiting} waiting, {uncovered} not covered by the jobs owned")


def _newest_first(jobs: list[Job]) -> tuple[str, ...]:
    """Job ids, the last submitted first (Slurm ids grow; an array task's ``A_I`` sorts by
    array then task)."""
    return tuple(job.job_id for job in sorted(jobs, key=lambda job: _job_order(job.job_id), reverse=True))


def _job_order(job_id: str) -> tuple[int, int]:
    array, _, task = job_id.partition("_")
    return (int(array) if array.isdigit() else 0, int(task) if task.isdigit() else 0)
