"""What runs inside the Slurm jobs. submitit pickles these functions by reference: they import nothing heavy
at module level, so unpickling them in a job is cheap and torch is imported only where a stage needs it.

Preparation happens here, in the jobs, never at submit time: a stage's fingerprint depends on the previous
stage's DONE.json, which does not exist yet when the whole chain is submitted.
"""

from __future__ import annotations

import json
import os

from kamado.recipe import Recipe
from kamado.stage import StageResult, Workspace, run_one_stage


def corpus_shard(recipe: Recipe, shard: int, num_shards: int) -> dict:
    """One array task: filter one shard (the same `run_shard` the local process pool runs)."""
    from kamado.corpus.stage import run_shard

    ws = Workspace(recipe)
    ws.require_previous("corpus")
    if ws.is_done("corpus"):
        return {"skipped": True}
    ws.prepare("corpus")  # locked: the array's tasks do this at the same time
    return run_shard(recipe, ws, shard, num_shards)


def corpus_finish(recipe: Recipe) -> str:
    """After the whole array (afterok): global dedup and report, then the stage's DONE.json."""
    from kamado.corpus.stage import finish

    return run_one_stage(recipe, "corpus", run=lambda r, ws: finish(r, ws, r.corpus.num_shards))


def single_stage(recipe: Recipe, stage: str) -> str:
    """Tokenizer and release: the local code path, in one task."""
    return run_one_stage(recipe, stage)


def _build_function(stage: str):
    """The stage's `build(ws, cfg, tokenizer, device)`, from the module torchrun would start locally."""
    import importlib

    from kamado.train.worker import STAGE_MODULES

    return importlib.import_module(STAGE_MODULES[stage]).build


def _train(stage: str, workdir: str) -> None:
    from kamado.train.worker import run_worker

    code = run_worker(stage, workdir, _build_function(stage))
    if code != 0:
        # STOPPED_EXIT_CODE (and <stage>/STOPPED.json): checkpointed on SIGUSR1/SIGTERM. Requeue hook, not built
        # yet: requeue here (`scontrol requeue $SLURM_JOB_ID`, up to slurm.max_requeues) instead of failing;
        # the requeued job resumes from that checkpoint through the same train_rank.
        raise RuntimeError(f"{stage}: training stopped with exit code {code}")


def train_rank(recipe: Recipe, stage: str) -> str:
    """One rank of a training job (srun starts nodes × nproc_per_node of them).

    Rank 0 prepares the stage folder before it joins the rendezvous; the other ranks cannot pass
    torch.distributed init until it does, so nobody writes into the folder before it is prepared. Rank 0 marks
    the stage done after the final barrier. Every rank decides "done already" from the same DONE.json, which
    cannot change meanwhile (rank 0 only rewrites it after all ranks have trained)."""
    ws = Workspace(recipe)
    workdir = str(ws.root)
    if int(os.environ.get("SLURM_PROCID", "0")) == 0:
        def run(r: Recipe, ws: Workspace) -> StageResult:
            _train(stage, workdir)
            counts = json.loads((ws.stage_dir(stage) / "result.json").read_text())
            # the same outputs kamado.train.launch.run_training_stage lists for a local run
            return StageResult(counts=counts, outputs=["hf", "checkpoints", "metrics.jsonl", "result.json", "reference_logits.pt"])

        return run_one_stage(recipe, stage, run=run)
    ws.require_previous(stage)
    if ws.is_done(stage):
        return "skipped"
    _train(stage, workdir)
    return "done"
