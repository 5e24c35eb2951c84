"""Start a training stage on this machine: torchrun with `nproc_per_node` local ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kamado.recipe import Recipe
from kamado.stage import StageResult, Workspace

STOPPED_EXIT_CODE = 3  # mirrors kamado.train.loop (not imported here: it pulls in torch)


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # without it 2 CPU ranks run at half speed
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run_training_stage(recipe: Recipe, ws: Workspace, stage: str, rank_main: str, outputs: tuple[str, ...]) -> StageResult:
    """torchrun of `python -m RANK_MAIN WORKDIR` (the stage's module, from its pipeline spec) on this machine."""
    cfg = recipe.stage_config(stage)
    if cfg.nodes > 1:
        raise RuntimeError(f"{stage}.nodes={cfg.nodes}: more than one node needs the Slurm executor (--executor slurm)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc_per_node}",
           "-m", rank_main, str(ws.root)]
    proc = subprocess.run(cmd, env=worker_env())
    stopped = ws.stage_dir(stage) / "STOPPED.json"
    if proc.returncode == STOPPED_EXIT_CODE or stopped.is_file():  # torchrun reports a worker's exit 3 as its own 1
        why = json.loads(stopped.read_text()) if stopped.is_file() else {"reason": "signal", "step": "?"}
        raise RuntimeError(f"{stage}: stopped ({why['reason']}) at step {why['step']} after saving a checkpoint; run again to resume")
    if proc.returncode != 0:
        raise RuntimeError(f"{stage}: training failed (exit code {proc.returncode}); see the output above")
    result = json.loads((ws.stage_dir(stage) / "result.json").read_text())
    return StageResult(counts=result, outputs=list(outputs))
