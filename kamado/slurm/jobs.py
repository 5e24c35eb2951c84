"""What runs inside the Slurm jobs, for any stage: each job reads what to do from the stage's pipeline spec
(kamado/pipeline.py), so a stage kamado does not have runs the same way. submitit pickles these functions by
reference: they import nothing heavy at module level, so unpickling them in a job is cheap and torch is imported
only where a stage needs it.

- a phase's array task (`phase_task`): prepare the stage folder, then `kamado.phase_tasks.run_phase_task`;
- phases the stage keeps off job arrays (`Phase.slurm_array` false) and that come before an array phase: one
  job runs them here (`phases_here`);
- the finish job (`finish_stage`): the phases kept off arrays that come last, then the stage's `finish` with the
  timings of every phase, then DONE.json;
- a `run` stage (`single_stage`): the local code path in one task;
- a training stage (`train_rank`): one rank of nodes × nproc_per_node, running the spec's `rank_main` module.

Preparation happens here, in the jobs, never at submit time: a stage's fingerprint depends on the previous
stage's DONE.json, which does not exist yet when the whole chain is submitted.

Signals and requeue (which process gets what):
- Training jobs ask for `--signal=USR1@<slurm.signal_delay_s>` (no "B:"), so slurmstepd sends SIGUSR1 to every
  task of the job step, i.e. to every rank's Python process (srun starts `python -m submitit.core._submit` as
  the task itself). `scontrol requeue`, preemption and scancel make slurmstepd send SIGTERM to the same
  processes. The training loop's handler (kamado.train.loop) replaces submitit's SIGTERM "bypass" handler, all
  ranks agree on the stop, checkpoint collectively, write STOPPED.json and return STOPPED_EXIT_CODE.
  Rank 0 then requeues the job itself (`scontrol requeue`) only when the job is still RUNNING, i.e. when nobody
  else is ending it (the time-limit warning, or `scancel --signal=USR1`); after `scontrol requeue` or a
  preemption Slurm requeues it anyway, and after scancel it must stay cancelled. submitit's own
  Checkpointable handler does not fit here: it runs in rank 0 only, inside the signal handler, and requeues
  before the other ranks have saved their ZeRO shards.
- Phase tasks are submitit Checkpointables (submitit's USR2 near the time limit → requeue of that array task,
  up to slurm.max_requeues); a requeued or rerun task skips the work units that have their done-marker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

from submitit.helpers import Checkpointable

from kamado.phase_tasks import phase_timings, record_path, run_phase_task, stage_phases
from kamado.pipeline import current
from kamado.recipe import Recipe
from kamado.stage import StageResult, Workspace, run_one_stage


class Requeued(Exception):
    """Training stopped on a signal and the job is requeued (by itself or by Slurm): the stage is not done."""


def _ready(recipe: Recipe, stage: str) -> Workspace | None:
    """The workspace with the stage folder prepared, or None when the stage is done already. Every task of every
    array does this at once: prepare() is locked, the first moves a stale folder aside, the others keep it."""
    ws = Workspace(recipe)
    ws.require_previous(stage)
    if ws.is_done(stage):
        return None
    ws.prepare(stage)
    return ws


class PhaseTask(Checkpointable):
    """One array task: task `task` of `num_tasks` of the stage's phase (units task, task + num_tasks, ...; the
    array's size is fixed at submit time, so an array sized before the phase's units are known still covers them).

    Checkpointable: submitit's checkpoint() resubmits the same call, and every unit that already has its
    done-marker is skipped, so a requeued task only does what is left."""

    def __call__(self, recipe: Recipe, stage: str, phase: str, task: int, num_tasks: int) -> dict:
        ws = _ready(recipe, stage)
        if ws is None:
            return {"skipped": True}
        return run_phase_task(recipe, ws, stage, phase, task, num_tasks)


phase_task = PhaseTask()


class PhasesHere(Checkpointable):
    """One job running phases kept off job arrays (Phase.slurm_array false) that an array phase comes after."""

    def __call__(self, recipe: Recipe, stage: str, names: list[str]) -> dict[str, int]:
        from kamado.local import run_phases_here

        ws = _ready(recipe, stage)
        return {} if ws is None else run_phases_here(recipe, ws, stage, names)


phases_here = PhasesHere()


def _recorded_sizes(ws: Workspace, stage: str, names: list[str]) -> dict[str, int]:
    """{phase: tasks it ran with} of phases an earlier job ran here (its task 0's record says how many)."""
    out = {}
    for name in names:
        path = record_path(ws, stage, name, 0)
        if not path.is_file():
            raise RuntimeError(f"{stage}: {path} missing: phase {name} did not run; see "
                               f"{ws.root / 'slurm' / stage}/*_log.err and submit again")
        out[name] = json.loads(path.read_text())["num_tasks"]
    return out


def finish_stage(recipe: Recipe, stage: str, array_sizes: dict[str, int], ran_before: list[str],
                 run_here: list[str]) -> str:
    """After the stage's last array (afterok): run the phases in `run_here` on this machine, then the stage's
    finish with every phase's timings ({phase: tasks}: `array_sizes` as submitted, `ran_before` from their
    records), then DONE.json."""
    from kamado.local import run_phases_here

    spec = current().spec(stage)

    def run(r: Recipe, ws: Workspace) -> StageResult:
        sizes = {**array_sizes, **_recorded_sizes(ws, stage, ran_before), **run_phases_here(r, ws, stage, run_here)}
        order = [p.name for p in stage_phases(r, stage) if p.name in sizes]
        return spec.entry("finish")(r, ws, phase_timings(ws, stage, {name: sizes[name] for name in order}))

    return run_one_stage(recipe, stage, run)


def single_stage(recipe: Recipe, stage: str) -> str:
    """A `run` stage: the local code path, in one task."""
    from kamado.local import run_here

    return run_one_stage(recipe, stage, lambda r, w: run_here(r, w, stage))


def _stage_main(stage: str):
    """The stage's rank entry point `main([workdir]) -> exit code`: the module torchrun starts locally, so a rank
    runs the same code on Slurm (fine-tuning's export with LoRA merging and the reward head, PPO's own trainer)."""
    import importlib

    return importlib.import_module(current().spec(stage).rank_main).main


# ------------------------------------------------------------------ training: stop, requeue, resume
def requeue_decision(reason: str | None, job_state: str | None, restarts: int, max_requeues: int) -> str:
    """What rank 0 does once the loop stopped: "requeue" (scontrol requeue this job), "slurm" (Slurm is ending
    or requeueing the job itself: just exit), or "fail" (with the reason as the error)."""
    if reason != "signal":
        return "fail"  # too many non-finite steps (or no STOPPED.json): a rerun would stop the same way
    if job_state != "RUNNING":
        return "slurm"  # scontrol requeue / preemption (REQUEUED, PREEMPTED, ...) or scancel (CANCELLED)
    return "requeue" if restarts < max_requeues else "fail"


def _job_state(job_id: str) -> str | None:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60)
    for token in out.stdout.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    return None


def _after_stop(recipe: Recipe, stage: str) -> None:
    """Rank 0, after the loop checkpointed and stopped: requeue, leave it to Slurm, or fail. Raises in each case
    (Requeued or RuntimeError): the stage must not be marked done."""
    stopped_path = Workspace(recipe).stage_dir(stage) / "STOPPED.json"
    stopped = json.loads(stopped_path.read_text()) if stopped_path.is_file() else {}
    job_id = os.environ.get("SLURM_JOB_ID", "")
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    state = _job_state(job_id) if job_id else None
    action = requeue_decision(stopped.get("reason"), state, restarts, recipe.slurm.max_requeues)
    step = stopped.get("step")
    if action == "requeue":
        out = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        if out.returncode:
            raise RuntimeError(f"{stage}: checkpointed at step {step}, but `scontrol requeue {job_id}` failed: "
                               f"{out.stderr.strip()}")
        print(f"[kamado] {stage}: checkpointed at step {step}; requeued job {job_id} "
              f"(restart {restarts + 1} of at most slurm.max_requeues={recipe.slurm.max_requeues})", flush=True)
        raise Requeued(stage)
    if action == "slurm":
        print(f"[kamado] {stage}: checkpointed at step {step}; job {job_id} is {state}: Slurm ends or requeues it",
              flush=True)
        raise Requeued(stage)
    if stopped.get("reason") == "signal":
        raise RuntimeError(f"{stage}: stopped on a signal at step {step} (checkpoint saved in {stopped_path.parent}), "
                           f"but the job was restarted {restarts} times already (slurm.max_requeues="
                           f"{recipe.slurm.max_requeues}); rerun to resume from the checkpoint")
    raise RuntimeError(f"{stage}: training stopped ({stopped.get('reason', 'no STOPPED.json')}) at step {step}; "
                       f"see {stopped_path}")


def _redeliver_early_usr1() -> None:
    """A SIGUSR1 that comes while the rank is still importing torch or building the model would kill it (the
    default action) or be lost. Catch it here and send it again once the training loop has its own handler."""
    ours = threading.Event()

    def early(signum, frame):  # noqa: ARG001
        ours.set()

    signal.signal(signal.SIGUSR1, early)

    def watch() -> None:
        ours.wait()
        while signal.getsignal(signal.SIGUSR1) is early:
            threading.Event().wait(0.2)
        if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None):
            print("[kamado] SIGUSR1 came before the training loop started; passed on to it now", flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)

    threading.Thread(target=watch, daemon=True, name="kamado-early-usr1").start()


def _train(recipe: Recipe, stage: str, workdir: str) -> None:
    from kamado.train.loop import STOPPED_EXIT_CODE

    code = _stage_main(stage)([workdir])
    if code == 0:
        return
    if code == STOPPED_EXIT_CODE and int(os.environ.get("SLURM_PROCID", "0")) == 0:
        _after_stop(recipe, stage)
    if code == STOPPED_EXIT_CODE:  # other ranks: rank 0 decides; exit cleanly so srun does not kill it first
        raise Requeued(stage)
    raise RuntimeError(f"{stage}: training exited with code {code}")


def train_rank(recipe: Recipe, stage: str) -> str:
    """One rank of a training job (srun starts nodes × nproc_per_node of them).

    Rank 0 prepares the stage folder before it joins the rendezvous; the other ranks cannot pass
    torch.distributed init until it does, so nobody writes into the folder before it is prepared. Rank 0 marks
    the stage done after the final barrier. Every rank decides "done already" from the same DONE.json, which
    cannot change meanwhile (rank 0 only rewrites it after all ranks have trained). A requeued job runs this
    again: prepare() keeps the folder (same fingerprint) and the loop resumes from the newest checkpoint."""
    _redeliver_early_usr1()
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    print(f"[kamado] {stage}: rank {rank} of {os.environ.get('SLURM_NTASKS', '1')} started on "
          f"{os.environ.get('SLURMD_NODENAME', '?')} (restart {os.environ.get('SLURM_RESTART_COUNT', '0')})", flush=True)
    ws = Workspace(recipe)
    workdir = str(ws.root)
    try:
        if rank == 0:
            def run(r: Recipe, ws: Workspace) -> StageResult:
                _train(r, stage, workdir)
                counts = json.loads((ws.stage_dir(stage) / "result.json").read_text())
                # the outputs its spec declares, as kamado.train.launch.run_training_stage records for a local run
                return StageResult(counts=counts, outputs=list(current().spec(stage).outputs))

            return run_one_stage(recipe, stage, run)
        ws.require_previous(stage)
        if ws.is_done(stage):
            return "skipped"
        _train(recipe, stage, workdir)
        return "done"
    except Requeued:
        return "stopped"  # checkpointed; the requeued job resumes from it
