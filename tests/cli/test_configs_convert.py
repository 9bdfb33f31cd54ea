"""``workflow configs convert``: a file of the system users come from, in this format."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner
from ulid import ULID

from workflow.cli.app import app
from workflow.core import configs
from workflow.core.config_convert import convert

#: Their documentation's example (workflow-pipelines-flow), with a schedule, an if and deployments.
OLD = textwrap.dedent("""\
    version: "1"
    name: "demo"
    schedule:
      cronspec: "*/2 * * * *"
      count: 0
    defaults:
      user: "chimefrb"
      pipeline: demo
    pipeline:
      stage_1_a:
        stage: 1
        matrix:
          job_id:
            range: [1, 2]
          site: ["aro", "canfar"]
        work:
          site: ${{ matrix.site }}
          parameters:
            job_id: ${{ matrix.job_id }}
      stage_2_a:
        stage: 2
        if: ${{ pipeline.stage_1_a.status == 'success' }}
        work:
          command: ["ls", "-la"]
          site: "local"
      tell:
        if: failure
        work: {command: ["echo", "failed"], site: local}
    deployments:
      - {image: chime/frb, replicas: 2}
""")


def test_their_documented_example_converts_to_a_file_this_format_reads_with_the_same_works():
    converted = convert(OLD, "old.yaml")
    config = configs.parse(converted.text, "new.yaml")
    assert [step.name for step in config.steps] == ["stage-1-a", "stage-2-a", "tell"]
    assert config.schedule is not None and config.schedule.spec == "0 */2 * * * *" and config.schedule.count is None
    first = config.step("stage-1-a")
    assert first.matrix == {"job_id": [1, 2], "site": ["aro", "canfar"]}  # their range includes its stop: 4 works
    assert config.step("stage-2-a").expression == "pipeline.stage-1-a.status == 'success'"
    plan = configs.plan(config, str(ULID()), 0.0)
    assert len(plan.of_step("stage-1-a")) == 4 and {p.work.site for p in plan.of_step("stage-1-a")} == {"aro",
                                                                                                     "canfar"}
    assert all(p.work.user == "chimefrb" for p in plan.works)
    assert converted.text.startswith("# converted from old.yaml")
    assert [note.split(":")[0] for note in converted.notes] == [
        "schedule.count 0 (every firing) is no count here", "step stage_1_a", "step stage_2_a",
        "step stage-1-a", "deployments dropped"]


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nsteps: [{name: a, work: {pipeline: p}}]\n", "already in this format"),
    ("name: x\n", "expected the old format"),
    ("pipeline: [\n", "not valid YAML"),
])
def test_a_file_that_is_not_of_the_old_format_is_refused(text, message):
    with pytest.raises(configs.ConfigError, match=message):
        convert(text, "f.yaml")


def test_the_cli_writes_the_file_notes_the_changes_and_locates_what_no_rule_decides(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("version: 1\nname: n\npipeline:\n  a_b:\n    work: {command: [ls]}\n")
    new = tmp_path / "new.yaml"
    result = CliRunner().invoke(app, ["configs", "convert", str(old), "-o", str(new)])
    # a step with no pipeline: written, then reported where it is in the new file, exit 1
    assert result.exit_code == 1
    assert "note: step a_b: named a-b" in result.output
    assert f"{new}:4:3: step a-b: its work needs a pipeline" in result.output
    assert "name: a-b" in new.read_text()
    new.write_text(new.read_text().replace("name: n\n", "name: n\ndefaults: {pipeline: p}\n"))
    assert CliRunner().invoke(app, ["configs", "deploy", str(new), "--dry-run"]).exit_code == 0
