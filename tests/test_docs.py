"""The documentation site builds with ``mkdocs build --strict``: every page in the nav,
no broken link or anchor, every API reference resolved, the CLI reference generated
from the app itself."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built strictly into a temporary directory (offline: nothing is fetched)."""
    target = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target), "--config-file",
         str(ROOT / "mkdocs.yml")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=170,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return target


def test_the_documentation_site_builds_strictly(site: Path):
    for page in ("index.html", "tutorial/index.html", "concepts/guarantees/index.html",
                 "howto/metrics/index.html", "reference/cli/index.html", "reference/python/index.html"):
        assert (site / page).is_file(), page


def test_the_cli_reference_has_every_command_and_its_options(site: Path):
    from workflow.cli.app import app

    html = (site / "reference/cli/index.html").read_text()
    for command in app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        assert f"workflow {name}" in html, name
    assert "--metrics-port" in html and "WORKFLOW_NATS_URL" in html


def test_the_python_reference_documents_work_connect_results_events_and_errors(site: Path):
    html = (site / "reference/python/index.html").read_text()
    for name in ("Work", "connect", "Client", "Results", "Succeeded", "ConflictError", "pipelines"):
        assert f">{name}<" in html or f"{name}</code>" in html, name


def test_the_built_site_loads_nothing_from_font_or_cdn_servers(site: Path):
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, page
        assert '<script src="https://' not in text and 'rel="stylesheet" href="https://' not in text, page


def test_no_plugin_fetches_from_the_network_at_build_time():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    plugins = {next(iter(p)) if isinstance(p, dict) else p for p in config["plugins"]}
    assert plugins == {"search", "mkdocstrings"}  # no social cards, no privacy downloads
    handler = config["plugins"][1]["mkdocstrings"]["handlers"]["python"]
    assert "inventories" not in handler and "import" not in handler  # no objects.inv from other sites


# -- every command a guide shows exists ---------------------------------------------------

#: The guides: the README, every page under docs/, and the deploy/ READMEs.
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "deploy").rglob("README.md"))]
FENCED = re.compile(r"^(?P<indent> *)(?P<fence>```|~~~)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)", re.M | re.S)
INLINE = re.compile(r"`(workflow [^`\n]+)`")
SHELL_PUNCTUATION = set("();<>|&")


def shown_command_lines(text: str) -> list[str]:
    """The lines of a guide that may run ``workflow``: its fenced and indented code blocks
    (continuation lines joined) and its inline code that starts with ``workflow ``."""
    blocks = [m.group("body") for m in FENCED.finditer(text)]
    prose = FENCED.sub("", text)
    blocks.append("\n".join(line for line in prose.splitlines() if line.startswith("    ")))
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return lines + INLINE.findall(prose)


def workflow_invocations(line: str) -> list[list[str]]:
    """The argument lists of each ``workflow …`` the shell line runs (after ``;``, ``&&``,
    ``|``, ``$(…)``, and ``VAR=value`` prefixes); a shell comment is not run."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote in prose: words will do
        tokens = line.split("#", 1)[0].split()
    invocations: list[list[str]] = []
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if set(token) <= SHELL_PUNCTUATION:
            while segment and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*|\$", segment[0]):
                segment.pop(0)
            if segment and segment[0] == "workflow":
                invocations.append(segment[1:])
            segment = []
        else:
            segment.append(token)
    return invocations


def problem_with(command: Any, args: list[str]) -> str | None:
    """Why ``workflow args`` names a command or an option the app does not have (None: it
    has them all). Arguments are not checked: guides show placeholders (ID, 01JD7X…)."""
    index = 0
    while hasattr(command, "commands") and index < len(args) and not args[index].startswith("-"):
        sub = command.commands.get(args[index])
        if sub is None:
            return f"no command {args[index]!r} (commands: {', '.join(sorted(command.commands))})"
        command, index = sub, index + 1
    options = {name: param for param in command.params for name in (*param.opts, *param.secondary_opts)
               if name.startswith("-")}
    while index < len(args):
        token = args[index].strip("[]")
        index += 1
        if not token.startswith("-") or token == "--" or re.fullmatch(r"-\d.*", token):
            continue
        name = token.split("=", 1)[0]
        if name == "--help":
            continue
        param = options.get(name)
        if param is None:
            return f"{command.name} has no option {name}"
        if not param.is_flag and not param.count and "=" not in token:
            index += 1  # its value, whatever it looks like (--port -1)
    return None


def test_every_workflow_command_and_option_a_guide_shows_exists():
    """Each ``workflow …`` in the README, docs/ and deploy/ READMEs names commands and
    options the app has: a renamed option or command fails here, not in a reader's shell."""
    import typer

    from workflow.cli.app import app

    root = typer.main.get_command(app)
    checked, problems = 0, []
    for guide in GUIDES:
        for line in shown_command_lines(guide.read_text()):
            for args in workflow_invocations(line):
                checked += 1
                problem = problem_with(root, args)
                if problem:
                    problems.append(f"{guide.relative_to(ROOT)}: `workflow {' '.join(args)}`: {problem}")
    assert checked > 80, checked  # the parser still finds the guides' commands
    assert not problems, "\n".join(problems)


def test_the_guide_checker_catches_an_unknown_command_or_option():
    import typer

    from workflow.cli.app import app

    root = typer.main.get_command(app)
    line = 'FOO=1 workflow ls -p a --json | jq . && workflow schedule add n p --cron "0 0 2 * * *"  # ok'
    assert [problem_with(root, args) for args in workflow_invocations(line)] == [None, None]
    assert "no option --frobnicate" in problem_with(root, ["ls", "--frobnicate"])
    assert "no command 'lst'" in problem_with(root, ["lst"])
    assert "no command 'list'" in problem_with(root, ["schedule", "list"])
    assert problem_with(root, ["server", "--port", "-1", "--data-dir", "d"]) is None
    assert shown_command_lines("see `workflow ls --pipeline P`.\n\n    workflow run p &\n") == [
        "workflow run p &", "workflow ls --pipeline P"]


def guide_row(page: str, first_cell: str) -> str:
    """The table row of ``docs/<page>`` whose first cell is ``first_cell``."""
    text = (ROOT / "docs" / page).read_text()
    match = re.search(rf"^\| {re.escape(first_cell)} \|.*$", text, re.M)
    assert match, f"{page} has no row {first_cell}"
    return match.group(0)


def test_the_metrics_guide_names_every_status_and_every_series_the_server_serves():
    from workflow.core.status import LOGGED
    from workflow.core.subjects import BucketKey
    from workflow.results import metrics

    statuses = guide_row("howto/metrics.md", "`workflow_pipeline_works`")
    assert all(f"`{status}`" in statuses for status in LOGGED), (LOGGED, statuses)
    every_source = metrics.Live(
        buckets=[metrics.BucketDepth("p", "local", 3, 1, 1, 1)], last_seq=2, log_messages=2, log_bytes=9,
        position=1, pipelines={"p": {"total": 1, "queued": 1}}, queued={BucketKey("p", "local", 3): 1},
    )
    guide = (ROOT / "docs/howto/metrics.md").read_text()
    names = {family.name for family in metrics.live_metrics(every_source)} | {"workflow_works_total"}
    assert names > {"workflow_bucket_waiting", "workflow_bucket_undelivered"}
    assert not {name for name in names if f"`{name}`" not in guide and f"`{name}," not in guide}


def test_the_audits_guide_names_workflow_audit_and_every_kind_of_anomaly():
    guide = (ROOT / "docs/howto/audits.md").read_text()
    kinds = set(re.findall(r'kind="([a-z-]+)"', (ROOT / "src/workflow/results/audit.py").read_text()))
    assert kinds >= {"rejected", "gap", "refold", "stranded"}
    assert "workflow audit" in "\n".join(shown_command_lines(guide))
    assert not {kind for kind in kinds if f"| `{kind}` |" not in guide}


def test_a_node_started_from_the_deploy_directory_writes_no_store_git_would_show():
    """deploy/cluster/README.md starts the nodes outside the repository; one started in
    deploy/ anyway keeps its relative ``store_dir`` out of ``git status``."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    stores = [(conf.parent / store).relative_to(ROOT) / "jetstream"
              for conf in sorted((ROOT / "deploy").rglob("*.conf"))
              for store in re.findall(r'store_dir: "?([^"\s]+)', conf.read_text()) if not store.startswith("/")]
    assert stores
    ignored = subprocess.run(["git", "check-ignore", *map(str, stores)], cwd=ROOT, capture_output=True, text=True)
    assert sorted(ignored.stdout.split()) == sorted(map(str, stores)), ignored.stderr
    readme = (ROOT / "deploy/cluster/README.md").read_text()
    assert readme.index("cd ~/workflow-cluster") < readme.index("nats-server -c")
