"""TLS with client certificates, against a real nats-server and a CA this test makes."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import workflow
from workflow.core.errors import ConnectionFailedError
from workflow.log.tls import tls_context
from workflow.server import EmbeddedNats, data_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def make_pki(directory: Path) -> None:
    """ca.pem, server.pem (127.0.0.1 and localhost), client.pem, each with its -key.pem."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("workflow test CA")).issuer_name(_name("workflow test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory, "ca", ca, ca_key)

    def leaf(stem: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(directory, stem, cert, key)

    leaf("server", ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("workflow-test-client")])


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory):
    """A nats-server that requires TLS and a client certificate signed by the test CA."""
    directory = tmp_path_factory.mktemp("tls")
    make_pki(directory)
    config = directory / "nats.conf"
    config.write_text(Path(data_path("nats.conf")).read_text() + f"""
tls {{
  cert_file: "{directory / 'server.pem'}"
  key_file: "{directory / 'server-key.pem'}"
  ca_file: "{directory / 'ca.pem'}"
  verify: true
  timeout: 2
}}
""")
    server = EmbeddedNats(directory / "nats", port=-1, config=config).start()
    try:
        yield server, directory
    finally:
        server.stop()


ENVIRONMENT = {
    **{name: value for name, value in os.environ.items() if not name.startswith("WORKFLOW_NATS_")},
    "NO_COLOR": "1", "COLUMNS": "200",
}


def workflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workflow.cli", *args], capture_output=True, text=True,
                          timeout=30, env=ENVIRONMENT)


def tls_options(directory: Path, *, cert: bool = True) -> list[str]:
    options = ["--nats-tls-ca", str(directory / "ca.pem")]
    if cert:
        options += ["--nats-tls-cert", str(directory / "client.pem"),
                    "--nats-tls-key", str(directory / "client-key.pem")]
    return options


@pytest.fixture(scope="module")
def applied(tls_server):
    server, directory = tls_server
    result = workflow_cli("streams", "apply", "--nats", server.url, *tls_options(directory))
    assert result.returncode == 0, result.stderr
    return server, directory


def test_the_cli_deposits_and_shows_over_tls_with_a_client_certificate(applied):
    server, directory = applied
    deposited = workflow_cli("deposit", "tls-pipeline", "--param", "a=1", "--json", "--nats", server.url,
                             *tls_options(directory))
    assert deposited.returncode == 0, deposited.stderr
    [work_id] = json.loads(deposited.stdout)

    shown = workflow_cli("show", work_id, "--json", "--nats", f"tls://localhost:{server.port}", *tls_options(directory))
    assert shown.returncode == 0, shown.stderr
    payload = json.loads(shown.stdout)
    assert payload["pipeline"] == "tls-pipeline"
    assert payload["parameters"] == {"a": 1}


def test_without_the_client_certificate_the_cli_fails_in_one_line(applied):
    server, directory = applied
    result = workflow_cli("deposit", "tls-pipeline", "--nats", server.url, *tls_options(directory, cert=False))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    # Usually nats-py hands us the TLS alert ("error: TLS handshake with NATS … failed …
    # give --nats-tls-cert …"); when the server drops the socket before the alert is read,
    # all it reports is "no servers available". Either way: one line, exit 3, nothing sent.
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(("error: TLS handshake with NATS", "error: cannot reach NATS")), result.stderr
    assert result.returncode == 3
    assert result.stdout == ""


def test_unreadable_tls_files_fail_in_one_line(applied, tmp_path):
    server, directory = applied
    result = workflow_cli("deposit", "tls-pipeline", "--nats", server.url, "--nats-tls-ca", str(directory / "ca.pem"),
                          "--nats-tls-cert", str(tmp_path / "missing.pem"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "cannot load TLS files" in result.stderr, result.stderr


async def test_connect_deposits_and_reads_over_tls(applied):
    server, directory = applied
    context = tls_context(directory / "ca.pem", directory / "client.pem", directory / "client-key.pem")
    async with workflow.connect(server.url, tls=context) as client:
        [work_id] = await client.deposit([workflow.Work(pipeline="tls-api", parameters={"b": 2})])
        work = await client.get(work_id)
    assert work.payload["pipeline"] == "tls-api"
    assert work.payload["parameters"] == {"b": 2}


# A client that does not trust the server's CA fails its own check of the server's
# certificate; nats-py then waited forever for the plain socket it had upgraded to close
# (nats-io/nats.py#718). Every way in must say so in one line within seconds instead.
WITHIN_SECONDS = 20  # the hang was endless; a loaded machine needs a few seconds per process start


@pytest.mark.parametrize("command", [
    ["deposit", "tls-pipeline", "--param", "a=1"],  # workflow.connect, the standard event loop
    ["run", "tls-pipeline", "--function", "workflow.examples.add"],  # a long-lived process, on uvloop
    ["streams", "apply"],  # its own nats.connect
], ids=["deposit", "run", "streams-apply"])
def test_without_tls_options_a_command_fails_within_seconds_in_one_line_with_exit_3(tls_server, command):
    # Given a server that requires TLS, with a certificate from a CA this client was not given
    server, _directory = tls_server
    # When a command connects with no TLS option at all
    started = time.monotonic()
    result = workflow_cli(*command, "--nats", server.url)
    elapsed = time.monotonic() - started
    # Then it stops within seconds, with one line naming the handshake, and exit 3 (as for no server)
    assert elapsed < WITHIN_SECONDS, (elapsed, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: TLS handshake with NATS"), result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in lines[0] and "--nats-tls-ca" in lines[0], result.stderr
    assert result.returncode == 3


async def test_connect_without_tls_options_raises_connection_failed_within_seconds(tls_server):
    server, _directory = tls_server
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError, match=r"TLS handshake with NATS .* failed"):
        async with asyncio.timeout(WITHIN_SECONDS):
            async with workflow.connect(server.url):
                pass
    assert time.monotonic() - started < WITHIN_SECONDS
