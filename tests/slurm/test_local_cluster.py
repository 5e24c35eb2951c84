"""The local Slurm test cluster really schedules jobs: sinfo, submitit (single job and array), 2-node srun."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slurm

submitit = pytest.importorskip("submitit")
cloudpickle = pytest.importorskip("cloudpickle")
# Ship this module's functions by value: the job then does not need to import the `tests` package.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _on_node(values):
    return {
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "node": os.environ.get("SLURMD_NODENAME"),
        "host": socket.gethostname(),
        "sum": sum(values),
    }


def _square(x):
    return x * x, os.environ.get("SLURM_ARRAY_TASK_ID")


def _executor(folder):
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1, nodes=1, tasks_per_node=1)
    return ex


def test_sinfo_two_idle_nodes(slurm_cluster):
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %t %P"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    rows = sorted(tuple(line.split()) for line in out.splitlines())
    assert rows == [("n1", "idle", "debug*"), ("n2", "idle", "debug*")], out


def test_submitit_job_returns_result(slurm_cluster, tmp_path):
    job = _executor(tmp_path).submit(_on_node, [1, 2, 3, 4])
    res = job.result()
    assert res["job_id"] == str(job.job_id)
    assert res["node"] in {"n1", "n2"}
    assert res["host"] == socket.gethostname()
    assert res["sum"] == 10


def test_submitit_job_array(slurm_cluster, tmp_path):
    jobs = _executor(tmp_path).map_array(_square, [1, 2, 3, 4])
    assert len(jobs) == 4
    results = [j.result() for j in jobs]
    assert [r[0] for r in results] == [1, 4, 9, 16]
    assert sorted(r[1] for r in results) == ["0", "1", "2", "3"]
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array job


def test_srun_two_nodes(slurm_cluster):
    cmd = 'echo "rank=$SLURM_PROCID nodeid=$SLURM_NODEID node=$SLURMD_NODENAME"'
    p = subprocess.run(
        ["srun", "-N2", "-n2", "-p", "debug", "-t", "1", "bash", "-c", cmd],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, p.stderr
    rows = sorted(
        tuple(kv.split("=", 1)[1] for kv in line.split()) for line in p.stdout.splitlines() if line.startswith("rank=")
    )
    assert rows == [("0", "0", "n1"), ("1", "1", "n2")], p.stdout
