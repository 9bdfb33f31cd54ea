"""A real single-node Slurm cluster: munged, slurmctld and slurmd from Debian's ``slurm-wlm``
and ``munge`` (``make slurm`` installs them), each in the foreground as a child of this
process, everything (key, socket, state, spool, logs, ports) in one directory: nothing under
/etc is touched and two clusters on one host never share anything. Used by the tests'
``slurm_cluster`` fixture and by benchmarks/slurm_scale.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def missing() -> list[str]:
    """The Slurm and munge programs this host lacks."""
    return [name for name in BINARIES if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class SlurmCluster:
    """A running single-node cluster: ``env`` is what its client commands need (SLURM_CONF)."""

    directory: Path
    conf: Path
    node: str
    env: dict[str, str]

    def run(self, *argv: str) -> str:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=True, timeout=60).stdout

    def jobs(self, owner: str) -> list[tuple[str, str]]:
        """(job id, state) of the jobs whose comment starts with ``owner/``."""
        out = self.run("squeue", "--noheader", "--array", "--format=%i|%T|%k")
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        return [(job_id, state) for job_id, state, comment in rows if comment.startswith(f"{owner}/")]


def _wait(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} not within {timeout:.0f} s\n{tail}")


def _node_memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 // 2  # half: slurmd refuses a node claiming more than it has
    return 1024


@contextlib.contextmanager
def single_node_cluster(directory: Path) -> Iterator[SlurmCluster]:
    """munged + slurmctld + slurmd on this host, in ``directory``, until the block ends
    (every job cancelled, the daemons stopped); SLURM_CONF is set in os.environ meanwhile."""
    for sub in ("state", "spool", "log"):
        (directory / sub).mkdir(parents=True)
    key = directory / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = directory / "munge.socket"
    node = socket.gethostname().split(".")[0]
    conf = directory / "slurm.conf"
    conf.write_text(f"""\
ClusterName=wftest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={directory}/state
SlurmdSpoolDir={directory}/spool
SlurmctldPidFile={directory}/slurmctld.pid
SlurmdPidFile={directory}/slurmd.pid
SlurmctldLogFile={directory}/log/slurmctld.log
SlurmdLogFile={directory}/log/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
KillWait=5
InactiveLimit=0
MinJobAge=2
NodeName={node} NodeHostname={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={_node_memory_mib()}
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    processes: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> None:
        processes.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    previous = os.environ.get("SLURM_CONF")
    try:
        start(_binary("munged"), "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}",
              f"--log-file={directory}/log/munged.log", f"--pid-file={directory}/munged.pid",
              f"--seed-file={directory}/munged.seed")
        _wait(munge_socket.exists, 20, "munged's socket", directory / "log/munged.log")
        start(_binary("slurmctld"), "-D", "-i", "-f", str(conf))
        start(_binary("slurmd"), "-D", "-f", str(conf))
        cluster = SlurmCluster(directory, conf, node, env)

        def node_idle() -> bool:
            with contextlib.suppress(subprocess.SubprocessError):
                return cluster.run("sinfo", "--noheader", "--format=%t").strip() == "idle"
            return False

        _wait(node_idle, 60, "the node idle in sinfo", directory / "log/slurmctld.log")
        os.environ["SLURM_CONF"] = str(conf)  # for the sbatch/squeue/scancel of the code under test
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["scancel", "--full", "--user=root"], env=env, timeout=30, capture_output=True)
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
