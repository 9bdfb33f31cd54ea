"""workflow scale's `scale:` section: parsed, checked, and turned into job scripts and sbatch options."""

from __future__ import annotations

import shlex
import sys

import pytest

from workflow.core.errors import ValidationError
from workflow.followers.scale_config import parse

FULL = """
workspace: {name: other-settings}   # another section of the same file: ignored
scale:
  site: cedar
  name: chime-scaler
  idle: 120
  nats: nats://nats.example.org:4222
  workflow: [workflow]
  output: logs/%x-%A_%a.out
  slurm: {partition: compute, account: rrg-chime, cpus: 1, memory: 4G, time: "04:00:00", extra: [--qos=normal]}
  template: |
    #!/bin/bash
    module load apptainer
    exec apptainer exec --bind /data chime.sif {worker}
  pipelines:
    dedisperse: {min: 1, max: 20, lives: 50, worker: [--isolation, thread], slurm: {cpus: 4, gpus: 1}}
    classify: {max: 3, concurrency: 2}
"""


def test_a_full_section_gives_each_pipeline_its_limits_resources_and_job_script():
    config = parse(FULL)
    assert (config.site, config.name, config.idle) == ("cedar", "chime-scaler", 120)
    assert config.pipelines["dedisperse"].limits("dedisperse").minimum == 1
    assert config.resources_of("dedisperse").sbatch_options() == [
        "--partition=compute", "--account=rrg-chime", "--cpus-per-task=4", "--mem=4G", "--time=04:00:00", "--gpus=1",
        "--qos=normal"]
    assert config.resources_of("classify").sbatch_options()[2] == "--cpus-per-task=1"
    script = config.script("dedisperse", None)
    assert script.startswith("#!/bin/bash\nmodule load apptainer\nexec apptainer exec --bind /data chime.sif workflow run")  # noqa: E501
    worker = shlex.split(script.splitlines()[-1])[7:]
    assert worker == ["run", "dedisperse", "--site", "cedar", "--lives", "50", "--concurrency", "1", "--sleep", "30",
                      "--isolation", "thread"]
    assert "--concurrency 2" in config.script("classify", "nats://x:4222")
    assert "--nats nats://x:4222" in config.script("classify", "nats://x:4222")


def test_the_default_job_script_execs_this_pythons_workflow():
    config = parse("scale: {pipelines: {p: {max: 2}}}")
    assert config.script("p", None) == (
        f"#!/bin/bash\nexec {shlex.quote(sys.executable)} -m workflow run p --site local --lives 100 "
        "--concurrency 1 --sleep 30\n")


@pytest.mark.parametrize(("text", "says"), [
    ("other: 1", "has no `scale:` section"),
    ("scale: {pipelines: {p: {maxx: 2}}}", "unknown field `maxx`"),
    ("scale: {pipelines: {p: {max: 0}}}", "scale.pipelines.p.max"),
    ("scale: {pipelines: {}}", "name at least one pipeline"),
    ("scale: {site: 'no spaces', pipelines: {p: {}}}", "scale.site"),
    ("scale: {site: nowhere, pipelines: {p: {}}}", "scale.site: unknown site 'nowhere'"),
    ("scale: {pipelines: {p: {}}, template: 'echo hi'}", "must contain {worker}"),
    ("scale: {pipelines: {p: {template: 'exec {worker}'}}}", "must start with #!"),
    ("scale: {pipelines: {p: {lives: 0}}}", "scale.pipelines.p.lives"),
    ("scale: [unclosed", "is not YAML"),
])
def test_a_wrong_section_is_refused_naming_what_is_wrong(text, says):
    with pytest.raises(ValidationError, match=None) as refused:
        parse(text)
    assert says in str(refused.value)
