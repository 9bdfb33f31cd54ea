"""The CLI's shared options: declared once, never clashing, passed on whole."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from workflow.cli.app import app
from workflow.cli.options import Connection, WorkFilters, connection_options, option_group
from workflow.cli.system import tui_argv

EVERY_CONNECTION_OPTION = Connection(
    url="nats://nats.example:4222", user="ops", password="s3cret", token="tok", creds=Path("/etc/nats/ops.creds"),
    nkey=Path("/etc/nats/ops.nk"), tls_ca=Path("/etc/nats/ca.pem"),
    tls_cert=Path("/etc/nats/ops.crt"), tls_key=Path("/etc/nats/ops.key"),
)


def every_command() -> Iterator[tuple[list[str], click.Command]]:
    """Each command and sub-command of the ``workflow`` app, with the words that name it."""
    def walk(path: list[str], command: click.Command) -> Iterator[tuple[list[str], click.Command]]:
        if hasattr(command, "commands"):  # a group (typer vendors its own click: no isinstance)
            for name, sub in command.commands.items():
                yield from walk([*path, name], sub)
        else:
            yield path, command

    yield from walk([], get_command(app))


def option_names(command: click.Command) -> list[str]:
    return [name for param in options(command) for name in (*param.opts, *param.secondary_opts)]


def options(command: click.Command) -> list[click.Option]:
    return [param for param in command.params if param.param_type_name == "option"]


COMMANDS = list(every_command())
COMMAND_IDS = [" ".join(path) for path, _ in COMMANDS]


def test_the_walk_finds_every_command_of_the_readme_and_its_options():
    assert set(COMMAND_IDS) == {
        "server", "deposit", "run", "ls", "count", "pipelines", "show", "history", "cancel", "requeue", "delete",
        "buckets",
        "streams apply", "replay", "sql", "export", "projector", "tui", "secure init", "audit",
        "schedule add", "schedule ls", "schedule rm", "notify test", "scale",
        "products ls", "products get", "workspace set", "workspace ls", "workspace show", "workspace unset",
        "configs deploy", "configs ls", "configs ps", "configs stop", "configs retry", "configs rm", "configs convert",
        "web", "secure web-user",
    }
    assert {"--user", "--nats", "--nats-user", "--json"} <= set(option_names(COMMANDS[COMMAND_IDS.index("deposit")][1]))


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
def test_no_command_has_two_options_with_one_name(path, command):
    names = option_names(command)
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
def test_help_lists_each_option_of_a_command_once(path, command):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    options_section = result.output.split("\nOptions:\n", 1)[1]
    listed = [name for line in options_section.splitlines() if re.match(r"^ {2}-", line)
              for name in re.split(r", | / ", re.split(r" {2,}| <", line.strip())[0])]
    assert sorted(listed) == sorted({*option_names(command), "--help"})


# sql reads a local file; secure init, secure web-user and workspace write local files, configs
# convert rewrites one; the server's --nats names a server to use instead of starting one.
TALKING_TO_NATS = [
    (path, command) for path, command in COMMANDS
    if path not in (["sql"], ["server"], ["secure", "init"], ["secure", "web-user"], ["configs", "convert"])
    and path[0] != "workspace"
]


@pytest.mark.parametrize(("path", "command"), TALKING_TO_NATS, ids=[" ".join(path) for path, _ in TALKING_TO_NATS])
def test_every_command_talking_to_nats_takes_every_connection_option_with_its_environment_variable(path, command):
    declared = {param.opts[0]: param for param in options(command)}
    expected = {"--nats": "URL", "--nats-user": "USER", "--nats-password": "PASSWORD", "--nats-token": "TOKEN",
                "--nats-creds": "CREDS", "--nats-nkey": "NKEY", "--nats-tls-ca": "TLS_CA",
                "--nats-tls-cert": "TLS_CERT", "--nats-tls-key": "TLS_KEY"}
    assert {name: declared[name].envvar for name in expected} == {
        name: f"WORKFLOW_NATS_{suffix}" for name, suffix in expected.items()
    }


def test_work_options_such_as_user_are_never_connection_options():
    for path, command in COMMANDS:
        for param in options(command):
            if str(param.envvar or "").startswith("WORKFLOW_NATS"):
                assert all(name.startswith("--nats") for name in param.opts), (path, param.opts)


def test_tui_web_argv_carries_every_connection_option_but_the_secrets_which_go_in_the_environment():
    argv = tui_argv(EVERY_CONNECTION_OPTION, refresh=5.0)
    assert argv[:4] == [sys.executable, "-m", "workflow.cli", "tui"]
    pairs = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert pairs == {
        "--refresh": "5.0", "--nats": "nats://nats.example:4222", "--nats-user": "ops",
        "--nats-creds": "/etc/nats/ops.creds", "--nats-nkey": "/etc/nats/ops.nk", "--nats-tls-ca": "/etc/nats/ca.pem",
        "--nats-tls-cert": "/etc/nats/ops.crt", "--nats-tls-key": "/etc/nats/ops.key",
    }
    assert "s3cret" not in argv and "tok" not in argv
    assert EVERY_CONNECTION_OPTION.secret_environment() == {
        "WORKFLOW_NATS_PASSWORD": "s3cret", "WORKFLOW_NATS_TOKEN": "tok",
    }


def test_tui_web_argv_and_environment_are_read_back_by_tui_as_the_same_connection(monkeypatch):
    for name in ("URL", "USER", "PASSWORD", "TOKEN", "CREDS", "NKEY", "TLS_CA", "TLS_CERT", "TLS_KEY"):
        monkeypatch.delenv(f"WORKFLOW_NATS_{name}", raising=False)
    for name, value in EVERY_CONNECTION_OPTION.secret_environment().items():
        monkeypatch.setenv(name, value)
    tui = next(command for path, command in COMMANDS if path == ["tui"])
    params = tui.make_context("tui", tui_argv(EVERY_CONNECTION_OPTION, refresh=5.0)[4:]).params
    assert Connection(**{name.removeprefix("connection__"): value for name, value in params.items()
                         if name.startswith("connection__")}) == EVERY_CONNECTION_OPTION


def test_a_url_carrying_a_password_goes_in_the_environment_never_on_the_command_line(monkeypatch):
    with_secret = Connection(url="nats://viewer:s3cret@nats.example:4222", user="viewer")
    argv = tui_argv(with_secret, refresh=5.0)
    assert not any("s3cret" in arg for arg in argv) and "--nats" not in argv
    assert with_secret.secret_environment() == {"WORKFLOW_NATS_URL": "nats://viewer:s3cret@nats.example:4222"}
    for name in ("URL", "USER", "PASSWORD", "TOKEN"):
        monkeypatch.delenv(f"WORKFLOW_NATS_{name}", raising=False)
    for name, value in with_secret.secret_environment().items():
        monkeypatch.setenv(name, value)
    tui = next(command for path, command in COMMANDS if path == ["tui"])
    params = tui.make_context("tui", argv[4:]).params
    assert params["connection__url"] == with_secret.url  # read back from the environment


def test_tui_web_argv_without_connection_options_leaves_them_to_the_environment():
    assert tui_argv(Connection(), refresh=2.0)[4:] == ["--refresh", "2.0"]


def test_connection_options_become_workflow_connect_keyword_arguments(tmp_path):
    assert Connection().options() == {"url": None}
    options = Connection(url="nats://h:1", user="u", password="p", token="t", creds=Path("c"), nkey=Path("k")).options()
    assert options == {"url": "nats://h:1", "user": "u", "password": "p", "token": "t", "user_credentials": "c",
                       "nkeys_seed": "k"}


def test_an_option_group_hands_the_command_one_instance_of_its_dataclass():
    seen = []
    demo = typer.Typer()

    @demo.command()
    @option_group(WorkFilters, "filters")
    @connection_options
    def command(limit: int = 1, *, filters: WorkFilters, connection: Connection) -> None:
        seen.append((limit, filters, connection))

    result = CliRunner().invoke(demo, ["--limit", "2", "--user", "alice", "--nats-user", "ops", "-t", "a", "-t", "b"],
                                env={"WORKFLOW_NATS_URL": "nats://env:4222"})
    assert result.exit_code == 0, result.output
    assert seen == [(2, WorkFilters(user="alice", tags=["a", "b"]), Connection(url="nats://env:4222", user="ops"))]


def test_an_option_group_refuses_a_command_without_the_parameter_to_receive_it():
    with pytest.raises(TypeError, match="no keyword-only parameter 'connection'"):
        @connection_options
        def command(limit: int = 1) -> None: ...

    with pytest.raises(TypeError, match="no keyword-only parameter 'connection'"):
        @connection_options
        def positional(connection: Connection) -> None: ...
