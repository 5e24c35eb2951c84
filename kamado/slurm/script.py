"""The dry run's sbatch scripts, written by kamado (no private submitit function): the same directives, log paths
and runner as a script submitit writes for a real submission, with every value shell-quoted.

Layout (what submitit's runner and `kamado slurm status` rely on):
- `#SBATCH` lines, sorted by option: the job's parameters (kamado.slurm.jobspec.base_params and kamado.slurm.executor.plan), then
  submitit's own: `--signal=USR2@90` (submitit's runner checkpoints and requeues a Checkpointable on it; training
  jobs override it with USR1 in additional_parameters), `--wckey=submitit`, the log files
  `<folder>/%j_0_log.{out,err}` (arrays: `%A_%a_0_log.*`), `--open-mode=append`, `--array=0-N%P`;
  `additional_parameters` (slurm.extra_sbatch included) last, so they win;
- the setup lines, then `srun --unbuffered --output ... --error ... <srun_args> <command>`.
sbatch reads the quoted values back (its #SBATCH parser honours quotes and backslashes).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from submitit.core.utils import JobPaths
from submitit.slurm.slurm import SlurmJobEnvironment

SUBMITIT_SIGNAL_DELAY_S = 90  # submitit's default signal_delay_s


def _flag(key: str, value: Any) -> str:
    return f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={shlex.quote(str(value))}"


def sbatch_script(command: str, folder: Path, params: dict[str, Any], array_tasks: int | None = None) -> str:
    """The job script for `params` (submitit SlurmExecutor parameters, as planned), running `command` under srun."""
    params = dict(params)
    setup: list[str] = list(params.pop("setup", []))
    srun_args: list[str] = list(params.pop("srun_args", []))
    parallelism = int(params.pop("array_parallelism", 256))
    additional = params.pop("additional_parameters", {})
    paths = JobPaths(folder=folder)
    stdout, stderr = str(paths.stdout), str(paths.stderr)
    directives: dict[str, Any] = {key.replace("_", "-"): value for key, value in params.items() if value is not None}
    directives.setdefault("signal", f"{SlurmJobEnvironment.USR_SIG}@{SUBMITIT_SIGNAL_DELAY_S}")
    directives.setdefault("wckey", "submitit")
    if array_tasks is not None:
        if array_tasks < 1:
            raise ValueError(f"a job array needs at least one task, not {array_tasks}")
        directives["array"] = f"0-{array_tasks - 1}%{min(array_tasks, parallelism)}"
        stdout, stderr = stdout.replace("%j", "%A_%a"), stderr.replace("%j", "%A_%a")
    directives.update({"output": stdout.replace("%t", "0"), "error": stderr.replace("%t", "0"), "open-mode": "append"})
    directives.update({key.replace("_", "-"): value for key, value in additional.items()})
    srun = shlex.join(["srun", "--unbuffered", "--output", stdout, "--error", stderr, *srun_args])
    lines = ["#!/bin/bash", "", "# Parameters", *(_flag(k, directives[k]) for k in sorted(directives))]
    if setup:
        lines += ["", "# setup", *setup]
    lines += ["", "# command", "export SUBMITIT_EXECUTOR=slurm", f"{srun} {command}", ""]
    return "\n".join(lines)
