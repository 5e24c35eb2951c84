"""Rendezvous: rank, world size and master address from torchrun's variables or from Slurm's.

The one place that reads SLURM_*; slurm/ may import it, train/ never imports slurm/.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int

    def export(self) -> None:
        """Set the env:// variables torch.distributed reads."""
        os.environ.update({
            "RANK": str(self.rank), "LOCAL_RANK": str(self.local_rank), "WORLD_SIZE": str(self.world_size),
            "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port),
        })


def port_for_job(job_id: str | int, base: int = 20_000, span: int = 20_000) -> int:
    """A port derived from the job id, so two jobs sharing a node do not pick the same one."""
    return base + int(re.sub(r"\D", "", str(job_id)) or 0) % span


def first_node_address(nodelist: str) -> str:
    """The address of the first node of a Slurm job: scontrol expands the list; NodeAddr is used because
    node names need not resolve (emulated nodes, clusters without DNS for compute names)."""
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True).stdout.split()
    first = hosts[0]
    info = subprocess.run(["scontrol", "show", "node", first, "-o"], capture_output=True, text=True).stdout
    match = re.search(r"NodeAddr=(\S+)", info)
    return match.group(1) if match else first


def from_environment() -> DistEnv:
    """torchrun (RANK/WORLD_SIZE set) wins; else srun's SLURM_PROCID/SLURM_NTASKS; else a single process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]),
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        job = env.get("SLURM_JOB_ID", "0")
        addr = env.get("MASTER_ADDR") or first_node_address(env["SLURM_JOB_NODELIST"])
        return DistEnv(int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"]),
                       addr, int(env.get("MASTER_PORT") or port_for_job(job)))
    return DistEnv(0, 0, 1, "127.0.0.1", int(env.get("MASTER_PORT", 29500)))
