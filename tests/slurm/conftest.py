"""The scaler's tests run against a real single-node Slurm cluster (:mod:`cluster`), one per
test session: Debian's ``slurm-wlm`` and ``munge``, which ``make slurm`` installs as
``make test`` does.

They skip, saying why, only where the cluster cannot exist: the packages are not installed
(and could not be: not root, no apt-get), or the session is not root (slurmd must be, to
start jobs as the user who submitted them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import SlurmCluster, missing, single_node_cluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A single-node Slurm for the whole session; SLURM_CONF set in os.environ."""
    lacking = missing()
    if lacking:
        pytest.skip(f"Slurm is not installed ({', '.join(lacking)} missing): `make slurm` installs Debian's "
                    "slurm-wlm and munge (as root)")
    if os.geteuid() != 0:
        pytest.skip("a single-node Slurm cluster needs root (slurmd starts jobs as their user)")
    with single_node_cluster(Path(tmp_path_factory.mktemp("slurm"))) as cluster:
        yield cluster
