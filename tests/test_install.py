"""The package as a user gets it: the built wheel, installed into a fresh venv without extras.

A checkout's venv holds the test and docs extras too, so an import of a package the project
never declared (click, once typer stopped installing it) passes every other test and breaks
every real install. Here the wheel gets only what it declares (requirements-runtime.lock,
the hashed resolution of pyproject's dependencies), runs from outside the checkout (so it
must find its own nats.conf and streams/), and does the main job: server, deposit, run, ls.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import typer.main

from workflow.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(600)


class Installed:
    """A fresh venv holding the built wheel and its runtime dependencies, nothing else."""

    def __init__(self, root: Path, wheel: Path, sdist: Path):
        self.root, self.wheel, self.sdist = root, wheel, sdist
        self.bin = root / "venv" / "bin"
        self.home = root / "home"  # cwd of every command: outside the checkout

    def run(self, *args: str, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("WORKFLOW_", "PYTHON", "VIRTUAL_ENV"))}
        result = subprocess.run([str(arg) for arg in args], cwd=self.home, env=env, capture_output=True, text=True,
                                timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def workflow(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return self.run(self.bin / "workflow", *args, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    [wheel], [sdist] = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    venv.create(root / "venv", with_pip=True)
    pip = [str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*pip, "--require-hashes", "-r", str(ROOT / "requirements-runtime.lock")],
                   check=True, capture_output=True, timeout=400)
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=120)
    (root / "home").mkdir()
    return Installed(root, wheel, sdist)


def test_wheel_and_sdist_carry_the_server_config_and_the_streams(installed: Installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert "workflow/_data/nats.conf" in names
    assert "workflow/_data/streams/WORKFLOW.json" in names
    # the web UI's pages and assets, served from the package (never fetched at run time)
    assert {"workflow/web/templates/base.html", "workflow/web/static/style.css", "workflow/web/static/app.js"} <= names
    with tarfile.open(installed.sdist) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"nats.conf", "streams/WORKFLOW.json", "pyproject.toml"} <= members


def test_the_wheel_declares_all_it_needs_and_nothing_else_is_installed(installed: Installed):
    check = installed.run(installed.bin / "python", "-m", "pip", "check")
    assert "No broken requirements" in check.stdout
    listed = installed.run(installed.bin / "python", "-m", "pip", "list", "--format=freeze").stdout.lower()
    # test and docs extras stay out (click no longer marks one: uvicorn, the web UI's server, needs it)
    for extra in ("pytest", "mkdocs", "hypothesis", "playwright"):
        assert extra not in listed, f"{extra} was installed into the bare venv:\n{listed}"


def test_installed_package_finds_its_data_outside_the_checkout(installed: Installed):
    code = "from workflow.log.resources import data_path; print(data_path('nats.conf')); print(data_path('streams'))"
    paths = installed.run(installed.bin / "python", "-c", code).stdout.split()
    assert len(paths) == 2
    for path in paths:
        assert "site-packages" in path and Path(path).exists(), path


def _command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as the words that name it (`[]` is `workflow` itself)."""
    paths: list[list[str]] = []

    def walk(command, words: list[str]) -> None:
        paths.append(words)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not sub.hidden:
                walk(sub, [*words, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_answers_help_in_the_bare_install(installed: Installed):
    paths = _command_paths()
    assert len(paths) > 20  # the walk found the commands, not just the top

    def help_of(words: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        return words, installed.workflow(*words, "--help", check=False)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(help_of, paths))
    for words, result in answers:
        assert result.returncode == 0, f"workflow {' '.join(words)} --help: {result.stdout}\n{result.stderr}"
        assert "Usage:" in result.stdout, result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def installed_server(installed: Installed) -> Iterator[str]:
    port = _free_port()
    log = installed.root / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(installed.bin / "workflow"), "server", "--port", str(port),
                                   "--data-dir", str(installed.root / "data")],
                                  cwd=installed.home, stdout=out, stderr=subprocess.STDOUT)
    url = f"nats://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while installed.workflow("pipelines", "--nats", url, check=False).returncode != 0:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"server not answering after 60 s:\n{log.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_installed_cli_serves_deposits_runs_and_lists(installed: Installed, installed_server: str):
    url = installed_server
    deposited = installed.workflow("deposit", "install-check", "-P", "a=2", "-P", "b=5", "--json", "--nats", url)
    [work_id] = json.loads(deposited.stdout)
    assert len(work_id) == 26, deposited.stdout  # a ULID
    installed.workflow("run", "install-check", "--function", "workflow.examples.add", "--lives", "1",
                       "--nats", url, timeout=120)
    deadline = time.monotonic() + 60
    while True:  # the read model catches up with the log
        listed = json.loads(installed.workflow("ls", "--pipeline", "install-check", "--json", "--nats", url).stdout)
        if [(work["id"], work["status"]) for work in listed] == [(work_id, "success")]:
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)
    shown = installed.workflow("show", work_id, "--nats", url).stdout
    assert "success" in shown and "7" in shown, shown
