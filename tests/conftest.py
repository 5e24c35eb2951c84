"""Shared pytest configuration for kamado. Keep this file small; add fixtures below the existing ones."""
from __future__ import annotations

import os

import pytest

from tests.slurm_cluster import LocalSlurmCluster, SlurmUnavailable


def pytest_configure(config):
    for name, desc in (
        ("slurm", "needs a real local Slurm cluster (slurm-wlm + munge, root); uses the slurm_cluster fixture"),
        ("distributed", "starts several processes (torch.distributed / DeepSpeed ranks)"),
        ("gpu", "needs a CUDA GPU; skipped elsewhere"),
        ("slow", "takes more than a few seconds"),
    ):
        config.addinivalue_line("markers", f"{name}: {desc}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """One real Slurm cluster (nodes n1, n2; partition debug) for the whole session; SLURM_CONF points to it.

    Skipped when slurmctld/munged are missing, unless KAMADO_REQUIRE_SLURM=1 (set in CI), which makes it fail.
    """
    cluster = LocalSlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as e:
        if os.environ.get("KAMADO_REQUIRE_SLURM") == "1":
            pytest.fail(f"KAMADO_REQUIRE_SLURM=1 but no local Slurm cluster can run: {e}")
        pytest.skip(f"no local Slurm cluster: {e}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf_path)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()
