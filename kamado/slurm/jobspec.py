"""One planned Slurm job (`JobSpec`), the sbatch parameters every kamado job shares, and its jobs.json entry.

Shared by the planner (kamado.slurm.executor), the dry run (kamado.slurm.dry_run), the status (kamado.slurm.status)
and other job chains built on the executor (kamado.slurm.eval_jobs).
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import kamado
from kamado.pipeline import PIPELINE_ENV
from kamado.slurm.validate import job_name, parse_extra_sbatch

if TYPE_CHECKING:
    from kamado.recipe import Recipe


@dataclass
class JobSpec:
    stage: str
    role: str  # a phase's name (its job array) | finish | stage | train | what another chain calls its jobs
    fn: Callable
    args: list[tuple]  # one tuple per array task; a single tuple makes a plain job
    params: dict[str, Any]  # submitit SlurmExecutor parameters
    array: bool = False
    phase: bool = False  # a phase's job array: each task leaves a record (kamado.phase_tasks) that status counts


def log_folder(recipe: Recipe, stage: str) -> Path:
    """Where a stage's jobs keep their logs and pickled calls: `<workdir>/slurm/<stage>`."""
    return Path(recipe.workdir) / "slurm" / stage


def setup_lines(recipe: Recipe) -> list[str]:
    """The shell lines every job runs before its command: the worker environment, the kamado the submitter runs
    (PYTHONPATH) and its pipeline (KAMADO_PIPELINE, when set), then the recipe's own slurm.setup lines."""
    from kamado.train.launch import worker_env  # light: no torch

    env = worker_env()
    exports = {k: env[k] for k in ("OMP_NUM_THREADS", "PYTHONWARNINGS", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE")}
    if recipe.slurm.gpus_per_node == 0:
        exports["DS_ACCELERATOR"] = "cpu"  # DeepSpeed picks its accelerator at import time
    if os.environ.get(PIPELINE_ENV):  # a job runs the stages of the submitter's pipeline (a lab's extra stage)
        exports[PIPELINE_ENV] = os.environ[PIPELINE_ENV]
    # Jobs import the same kamado as the submitter, installed or run from a checkout.
    code_root = str(Path(kamado.__file__).resolve().parents[1])
    lines = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    lines.append(f"export PYTHONPATH={shlex.quote(code_root)}${{PYTHONPATH:+:$PYTHONPATH}}")
    return lines + list(recipe.slurm.setup)  # the recipe's lines last: they may override ours


def base_params(recipe: Recipe, partition: str, stage: str, role: str) -> dict[str, Any]:
    """submitit parameters of a one-task job named `kamado-<recipe>-<stage>[-<role>]` (no suffix for the roles
    "stage" and "train", the stage's only job)."""
    s = recipe.slurm
    params: dict[str, Any] = {
        "job_name": job_name(f"kamado-{recipe.name}-{stage}" + ("" if role in ("stage", "train") else f"-{role}")),
        "time": s.time_minutes,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": s.cpus_per_task,
        "setup": setup_lines(recipe),
        # a failed job cancels its dependents instead of leaving them pending forever
        "additional_parameters": {"kill-on-invalid-dep": "yes", **parse_extra_sbatch(s.extra_sbatch)},
    }
    # no partition (a dry run without a cluster and none in the recipe): sbatch takes the cluster's default
    for key, value in (("partition", partition), ("account", s.account), ("qos", s.qos),
                       ("mem", f"{s.mem_gb}GB" if s.mem_gb else None)):
        if value:
            params[key] = value
    return params


def array_params(recipe: Recipe, partition: str, stage: str, role: str) -> dict[str, Any]:
    """base_params of a job array: at most slurm.array_parallelism tasks at once."""
    return {**base_params(recipe, partition, stage, role), "array_parallelism": recipe.slurm.array_parallelism}


def job_entry(spec: JobSpec, job_id: str | None = None) -> dict:
    """The jobs.json record of one submitted job (without an id: the dry run's plan, submit.sh adds it)."""
    entry: dict[str, Any] = {"role": spec.role}
    if job_id is not None:
        entry = {"id": job_id, **entry, "submitted_at": time.time()}
    if spec.array:
        entry["tasks"] = len(spec.args)
    if spec.phase:
        entry["phase"] = True
    return entry

