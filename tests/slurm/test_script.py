"""kamado's own sbatch renderer (the dry run's scripts): submitit's directives and log paths, every value quoted."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from kamado.slurm.script import sbatch_script


def test_array_script_directives_logs_and_quoting(tmp_path):
    folder = tmp_path / "run $(touch PWNED) 'q'" / "slurm" / "corpus"
    params = {"job_name": "kamado-t-corpus-filter", "partition": "debug", "time": 10, "nodes": 1, "ntasks_per_node": 1,
              "cpus_per_task": 2, "setup": ["echo setting-up"], "array_parallelism": 2, "account": "acc",
              "additional_parameters": {"kill-on-invalid-dep": "yes", "comment": "my run", "exclusive": True}}
    script = sbatch_script(shlex.join(["python", "-m", "kamado.slurm.run_job", str(folder)]), folder, params, 3)
    lines = script.splitlines()
    sbatch = [ln for ln in lines if ln.startswith("#SBATCH")]
    assert sbatch == sorted(sbatch) and lines[:3] == ["#!/bin/bash", "", "# Parameters"]
    for expected in ("--array=0-2%2", "--comment='my run'", "--exclusive", "--job-name=kamado-t-corpus-filter",
                     "--signal=USR2@90", "--wckey=submitit", "--open-mode=append", "--cpus-per-task=2", "--account=acc",
                     f"--output={shlex.quote(str(folder / '%A_%a_0_log.out'))}"):
        assert f"#SBATCH {expected}" in sbatch, expected
    srun = shlex.split(lines[-1])  # the command line as bash will split it: the folder stays one literal word
    assert srun[:6] == ["srun", "--unbuffered", "--output", str(folder / "%A_%a_%t_log.out"), "--error",
                        str(folder / "%A_%a_%t_log.err")] and srun[-1] == str(folder)
    assert lines[lines.index("# setup") + 1] == "echo setting-up" and "export SUBMITIT_EXECUTOR=slurm" in lines
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert not Path("PWNED").exists()


def test_single_job_and_overrides(tmp_path):
    params = {"job_name": "j", "time": 5, "srun_args": ["--kill-on-bad-exit=1"],
              "additional_parameters": {"signal": "USR1@120"}}
    lines = sbatch_script("CMD", tmp_path, params).splitlines()
    assert "#SBATCH --signal=USR1@120" in lines and "#SBATCH --signal=USR2@90" not in lines  # the job's own wins
    assert f"#SBATCH --output={tmp_path}/%j_0_log.out" in lines and not any("--array" in ln for ln in lines)
    assert lines[-1].startswith("srun --unbuffered") and lines[-1].endswith("--kill-on-bad-exit=1 CMD")
