"""Slurm through its own commands: ``sbatch`` submits, ``squeue`` lists, ``scancel`` cancels.

The commands (not the REST API, which few clusters open to users) are what every Slurm
login node has, with the user's own credentials (munge) and nothing to configure. Each call
has a deadline: ``squeue`` can hang for a while on a busy controller, and a look that
cannot finish is better skipped than waited for.

The jobs a scaler owns are known by their **comment**, ``OWNER/SITE/PIPELINE``
(``--comment``), read back from ``squeue --me``: never from memory, so a restarted scaler
sees exactly the jobs the one before it submitted, and two scalers with different owner
names on one cluster never touch each other's jobs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from workflow.core.errors import WorkflowError
from workflow.core.scaling import Job

log = logging.getLogger("workflow.scale")

#: Seconds a Slurm command may take before it is killed and the look given up.
COMMAND_DEADLINE = 60.0
#: squeue states of a job still waiting for its node(s); RUNNING and CONFIGURING are running.
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"})
#: States of a job that is ending: no longer counted (it takes no work).
ENDING_STATES = frozenset({"COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                           "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "STOPPED", "SPECIAL_EXIT", "SIGNALING"})


class SlurmError(WorkflowError):
    """A Slurm command failed or did not answer in time."""


@dataclass(frozen=True)
class OwnedJob:
    """A job of this scaler, as squeue shows it."""

    job_id: str   # JOBID or ARRAYJOBID_TASKID
    state: str
    site: str
    pipeline: str

    def as_job(self) -> Job:
        return Job(self.job_id, pending=self.state in PENDING_STATES)


def comment_of(owner: str, site: str, pipeline: str) -> str:
    """The comment that marks a job as this scaler's, for this site and pipeline."""
    return f"{owner}/{site}/{pipeline}"


class Slurm:
    """The Slurm commands, for the jobs of one ``owner``."""

    def __init__(self, owner: str, deadline: float = COMMAND_DEADLINE) -> None:
        self.owner = owner
        self.deadline = deadline

    async def jobs(self) -> list[OwnedJob]:
        """Every job of this owner that is pending or running (an array's tasks one by one)."""
        out = await self._run("squeue", "--me", "--noheader", "--array", "--format=%i|%T|%k")
        jobs = []
        for line in out.splitlines():
            job_id, _, rest = line.strip().partition("|")
            state, _, comment = rest.partition("|")
            owner, _, place = comment.partition("/")
            site, _, pipeline = place.partition("/")
            if owner == self.owner and site and pipeline and state not in ENDING_STATES:
                jobs.append(OwnedJob(job_id, state, site, pipeline))
        return jobs

    async def submit(
        self, script: str, count: int, *, site: str, pipeline: str, options: list[str], output: str | None = None,
    ) -> str:
        """Submit ``count`` copies of ``script`` as one job array; returns the array's job id."""
        argv = ["sbatch", "--parsable", f"--array=0-{count - 1}", f"--job-name=wf-{pipeline}",
                f"--comment={comment_of(self.owner, site, pipeline)}", *options]
        if output is not None:
            argv.append(f"--output={output}")
        out = await self._run(*argv, stdin=script)
        return out.strip().split(";")[0]

    async def cancel(self, job_ids: list[str] | tuple[str, ...]) -> None:
        """Cancel jobs (Slurm sends SIGTERM, then SIGKILL after its KillWait)."""
        if job_ids:
            await self._run("scancel", *job_ids)

    async def _run(self, *argv: str, stdin: str | None = None) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=os.environ.copy(),
            )
        except OSError as error:
            raise SlurmError(f"cannot run {argv[0]}: {error.strerror} (is Slurm installed and on PATH?)") from None
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), self.deadline)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise SlurmError(f"{argv[0]} did not answer within {self.deadline:.0f} s") from None
        if process.returncode != 0:
            raise SlurmError(f"{' '.join(argv[:2])}… exited with {process.returncode}: {err.decode().strip()}")
        return out.decode()
