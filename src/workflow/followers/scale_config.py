"""The ``scale:`` section of a YAML file: what ``workflow scale`` runs, where, and how many.

A section of its own, kept small on purpose: the site/workspace configuration of the
products issue is being designed separately; when it lands, this section can move under it
unchanged. Any other top-level key of the file is ignored, so the section can live in a
file shared with other settings. Unknown keys *inside* it are refused, naming the key: a
misspelt ``max`` must not silently mean "1 job".

.. code-block:: yaml

    scale:
      site: cedar                 # the site whose buckets this scaler watches (workflow run --site)
      name: workflow-scale        # tags the jobs this scaler owns (the job comment): one name per scaler
      interval: 10                # seconds between looks at the buckets and the queue
      idle: 300                   # seconds with nothing waiting or held before jobs are cancelled
      sleep: 30                   # workflow run --sleep of the workers
      nats: nats://nats.example.org:4222   # where the jobs' workers connect [default: where the scaler does]
      workflow: [workflow]        # how a job starts workflow [default: this Python's -m workflow]
      output: logs/%x-%A_%a.out   # sbatch --output
      slurm:                      # resources of every job (a pipeline may override any of them)
        partition: compute
        account: rrg-chime
        cpus: 1
        memory: 4G
        time: "04:00:00"
        gpus: 0
        extra: ["--qos=normal"]   # any other sbatch options
      template: |                 # the job script: {worker} is the worker's command line
        #!/bin/bash
        exec {worker}
      pipelines:
        dedisperse:
          min: 0
          max: 20
          concurrency: 1          # workflow run --concurrency: works one job takes at once
          lives: 100              # workflow run --lives: works a job runs before it ends
          worker: [--isolation, thread]   # more workflow run options
          slurm: {cpus: 4, gpus: 1}
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import msgspec
import msgspec.yaml

from workflow.core.errors import ValidationError
from workflow.core.scaling import Limits
from workflow.core.work import NAME_PATTERN, check_site

#: The job script when the configuration gives none: the worker, exec'ed so that Slurm's
#: signals (scancel, the time limit) reach it directly.
DEFAULT_TEMPLATE = "#!/bin/bash\nexec {worker}\n"


class SlurmResources(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """sbatch resources; None leaves the cluster's default."""

    partition: str | None = None
    account: str | None = None
    cpus: int | None = None     # --cpus-per-task
    memory: str | None = None   # --mem (e.g. 4G)
    time: str | None = None     # --time (e.g. 04:00:00)
    gpus: int | None = None     # --gpus
    extra: list[str] = []       # other sbatch options, as they are

    def over(self, base: SlurmResources) -> SlurmResources:
        """These resources, with ``base``'s where these leave one unset (extras: both)."""
        fields = {name: getattr(self, name) if getattr(self, name) is not None else getattr(base, name)
                  for name in ("partition", "account", "cpus", "memory", "time", "gpus")}
        return SlurmResources(**fields, extra=[*base.extra, *self.extra])

    def sbatch_options(self) -> list[str]:
        options = [f"--{flag}={value}" for flag, value in (
            ("partition", self.partition), ("account", self.account), ("cpus-per-task", self.cpus),
            ("mem", self.memory), ("time", self.time), ("gpus", self.gpus),
        ) if value is not None and not (flag == "gpus" and value == 0)]
        return [*options, *self.extra]


class PipelineScale(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One pipeline's bounds, worker options and resource overrides."""

    minimum: int = msgspec.field(default=0, name="min")
    maximum: int = msgspec.field(default=1, name="max")
    concurrency: int = 1
    lives: int = 100
    worker: list[str] = []
    slurm: SlurmResources = SlurmResources()
    template: str | None = None

    def limits(self, pipeline: str) -> Limits:
        return Limits(self.minimum, self.maximum, self.concurrency).check(pipeline)


class ScaleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The ``scale:`` section (see the module's example)."""

    pipelines: dict[str, PipelineScale]
    site: str = "local"
    name: str = "workflow-scale"
    interval: float = 10.0
    idle: float = 300.0
    sleep: float = 30.0
    nats: str | None = None
    workflow: list[str] = []
    output: str | None = None
    slurm: SlurmResources = SlurmResources()
    template: str = DEFAULT_TEMPLATE

    def check(self) -> ScaleConfig:
        """Raise ValidationError naming the first wrong key; ``self`` if all are right."""
        for field, value in (("site", self.site), ("name", self.name), *(("pipelines", p) for p in self.pipelines)):
            if not _is_name(value):
                raise ValidationError(f"scale.{field}", f"expected letters, digits and '-', got {value!r}")
        if not self.pipelines:
            raise ValidationError("scale.pipelines", "name at least one pipeline to scale")
        try:
            check_site(self.site)  # the workers' --site: refused there too, at every job start
        except ValidationError as error:
            raise ValidationError("scale.site", str(error).removeprefix("site: ")) from None
        if not 1 <= self.interval <= 3600:
            raise ValidationError("scale.interval", f"expected 1 to 3600 seconds, got {self.interval}")
        if self.idle < 0:
            raise ValidationError("scale.idle", f"expected >= 0 seconds, got {self.idle}")
        if not 1 <= self.sleep <= 300:
            raise ValidationError("scale.sleep", f"expected 1 to 300 seconds (workflow run --sleep), got {self.sleep}")
        for pipeline, scale in self.pipelines.items():
            scale.limits(pipeline)
            if scale.lives < 1:
                raise ValidationError(f"scale.pipelines.{pipeline}.lives", f"expected >= 1, got {scale.lives}")
            template = self.template_of(pipeline)
            if "{worker}" not in template:
                raise ValidationError(f"scale.pipelines.{pipeline}.template",
                                      "the job script must contain {worker}, where the worker starts")
            if not template.startswith("#!"):
                raise ValidationError(f"scale.pipelines.{pipeline}.template",
                                      "the job script must start with #! (e.g. #!/bin/bash), as sbatch requires")
        return self

    def template_of(self, pipeline: str) -> str:
        return self.pipelines[pipeline].template or self.template

    def resources_of(self, pipeline: str) -> SlurmResources:
        return self.pipelines[pipeline].slurm.over(self.slurm)

    def worker_argv(self, pipeline: str, url: str | None) -> list[str]:
        """The ``workflow run`` command line of a job of ``pipeline``. Credentials never go on
        it (``squeue`` shows it to everyone): the job inherits the scaler's environment
        (``WORKFLOW_NATS_*``), as sbatch exports it."""
        scale = self.pipelines[pipeline]
        argv = [*(self.workflow or [sys.executable, "-m", "workflow"]), "run", pipeline, "--site", self.site,
                "--lives", str(scale.lives), "--concurrency", str(scale.concurrency), "--sleep", f"{self.sleep:g}"]
        if url is not None:
            argv += ["--nats", url]
        return [*argv, *scale.worker]

    def script(self, pipeline: str, url: str | None) -> str:
        """The job script of ``pipeline``: its template with the placeholders filled."""
        return (self.template_of(pipeline)
                .replace("{worker}", shlex.join(self.worker_argv(pipeline, url)))
                .replace("{pipeline}", pipeline).replace("{site}", self.site))


class _File(msgspec.Struct, kw_only=True):
    scale: ScaleConfig


def _is_name(value: str) -> bool:
    return re.fullmatch(NAME_PATTERN, value) is not None and len(value) <= 128


def parse(text: str | bytes, source: str = "the configuration") -> ScaleConfig:
    """The checked ``scale:`` section of a YAML document (ValidationError naming what is wrong)."""
    try:
        return msgspec.yaml.decode(text, type=_File).scale.check()
    except msgspec.ValidationError as error:
        message = str(error)
        if "missing required field `scale`" in message:
            raise ValidationError("scale", f"{source} has no `scale:` section") from None
        raise ValidationError("scale", f"{source}: {message}") from None
    except msgspec.DecodeError as error:
        raise ValidationError("scale", f"{source} is not YAML: {error}") from None


def load(path: Path) -> ScaleConfig:
    """The ``scale:`` section of the YAML file at ``path``."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ValidationError("config", f"cannot read {path}: {error.strerror}") from None
    return parse(text, str(path))
