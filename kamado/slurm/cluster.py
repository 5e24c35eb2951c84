"""What kamado asks the cluster before it submits: partitions (sinfo), node and CPU counts (scontrol, sinfo),
MaxArraySize (scontrol show config), and the slurm settings that cannot work on any cluster. A dry run without a
reachable cluster skips what needs one, with a line saying what it assumed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kamado.pipeline import current
from kamado.recipe import Recipe, RecipeError

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize: task ids 0..1000


def run_command(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def field(line: str, key: str) -> str | None:
    """The value of `key=value` in one line of `scontrol show ... -o`."""
    for token in line.split():
        if token.startswith(key + "="):
            return token.split("=", 1)[1]
    return None


def partitions(timeout: float = 15) -> tuple[list[str] | None, str]:
    """(`sinfo -h -o %P`'s partitions, "") when Slurm's commands are on PATH and the controller answers; else
    (None, why not): a dry run then skips the checks that need a cluster."""
    if not shutil.which("sinfo"):
        return None, "Slurm's commands (sinfo, sbatch) are not on PATH"
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # sinfo would spend a minute on DNS lookups before it fails
        return None, f"SLURM_CONF={conf} is not a file"
    try:
        out = run_command(["sinfo", "-h", "-o", "%P"], timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"sinfo did not answer within {timeout:.0f} s"
    if out.returncode:
        return None, f"sinfo failed: {out.stderr.strip() or f'exit status {out.returncode}'}"
    return [p.strip() for p in out.stdout.split()], ""


def check_cluster(recipe: Recipe, stages: list[str], names: list[str] | None = None) -> str:
    """Fail before submitting anything when the recipe asks for what the cluster lacks; returns the partition.
    `names`: the partitions sinfo listed, when the caller asked already."""
    if names is None:
        names, unreachable = partitions()
        if names is None:
            raise RecipeError(f"--executor slurm: {unreachable}")
    partition = recipe.slurm.partition
    if partition is None:
        defaults = [p.rstrip("*") for p in names if p.endswith("*")]
        if not defaults:
            raise RecipeError("key 'slurm.partition': not set, and the cluster has no default partition")
        partition = defaults[0]
    known = sorted({p.rstrip("*") for p in names})
    if partition not in known:
        raise RecipeError(f"key 'slurm.partition': partition {partition!r} does not exist on this cluster "
                          f"(partitions: {', '.join(known) or 'none'})")
    info = run_command(["scontrol", "show", "partition", partition, "-o"]).stdout
    total_nodes = int(field(info, "TotalNodes") or 0)
    cpus = [int(c) for c in run_command(["sinfo", "-h", "-N", "-p", partition, "-o", "%c"]).stdout.split() if c.isdigit()]
    max_cpus = max(cpus, default=0)
    s = recipe.slurm
    if max_cpus and s.cpus_per_task > max_cpus:
        raise RecipeError(f"key 'slurm.cpus_per_task': {s.cpus_per_task} CPUs per task, but the nodes of partition "
                          f"{partition!r} have at most {max_cpus}")
    training = current().training
    for stage in stages:
        if stage not in training:
            continue
        cfg = recipe.stage_config(stage)
        if cfg.nodes > total_nodes:
            raise RecipeError(f"key '{stage}.nodes': {cfg.nodes} nodes requested, but partition {partition!r} "
                              f"has {total_nodes}")
        if max_cpus and cfg.nproc_per_node * s.cpus_per_task > max_cpus:
            raise RecipeError(f"key '{stage}.nproc_per_node': {cfg.nproc_per_node} ranks × slurm.cpus_per_task="
                              f"{s.cpus_per_task} CPUs per node, but the nodes of partition {partition!r} have at most {max_cpus}")
    return partition


def cluster_max_array_size() -> int:
    """MaxArraySize from `scontrol show config` (array task ids must stay below it)."""
    out = run_command(["scontrol", "show", "config"])
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    print(f"[kamado] MaxArraySize not found in `scontrol show config`; assuming Slurm's default {DEFAULT_MAX_ARRAY_SIZE}")
    return DEFAULT_MAX_ARRAY_SIZE


def dry_run_cluster(recipe: Recipe, todo: list[str]) -> tuple[str, int]:
    """(partition, MaxArraySize) for a dry run: the cluster's checks when it answers; else both assumed, with a
    line saying which checks were skipped and what was assumed (the scripts can then be written on a laptop)."""
    names, unreachable = partitions()
    if names is not None:
        return check_cluster(recipe, todo, names), cluster_max_array_size()
    partition = recipe.slurm.partition or ""
    print(f"[kamado] dry run without a reachable cluster ({unreachable}): skipped the cluster checks "
          f"(partition exists, nodes and CPUs per node) and assumed partition "
          f"{partition if partition else '(none: sbatch takes the cluster default)'}; skipped reading MaxArraySize "
          f"(scontrol show config) and assumed Slurm's default {DEFAULT_MAX_ARRAY_SIZE}")
    return partition, DEFAULT_MAX_ARRAY_SIZE


def check_recipe(recipe: Recipe) -> None:
    """Slurm settings that cannot work on any cluster."""
    s = recipe.slurm
    for key in ("time_minutes", "cpus_per_task", "array_parallelism"):
        if getattr(s, key) < 1:
            raise RecipeError(f"key 'slurm.{key}': must be at least 1, not {getattr(s, key)}")
    if s.max_array_tasks is not None and s.max_array_tasks < 1:
        raise RecipeError("key 'slurm.max_array_tasks': must be at least 1 (or null: the cluster's MaxArraySize)")
    if s.dedup_tasks is not None and s.dedup_tasks < 1:
        raise RecipeError("key 'slurm.dedup_tasks': must be at least 1 (or null: the phase's own default)")
    if s.max_requeues < 0:
        raise RecipeError(f"key 'slurm.max_requeues': must be 0 or more, not {s.max_requeues}")
    if not 0 < s.signal_delay_s < s.time_minutes * 60:
        raise RecipeError(f"key 'slurm.signal_delay_s': {s.signal_delay_s} s must be above 0 and below the time limit "
                          f"(slurm.time_minutes={s.time_minutes}, i.e. {s.time_minutes * 60} s)")
