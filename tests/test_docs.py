"""The documentation site builds with ``mkdocs build --strict``: every page in the nav,
no broken link or anchor, every API reference resolved, the CLI reference generated
from the app itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
