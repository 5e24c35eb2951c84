"""`kamado run --executor slurm`: submit every unfinished stage as submitit jobs and return at once.

Each stage is planned from its pipeline spec (kamado/pipeline.py), in the shape it declares; no stage is named here:
- `phases` + `finish`: one job array per phase whose `slurm_array(recipe)` holds, of
  min(`array_tasks(recipe)`, slurm.max_array_tasks, the cluster's MaxArraySize) tasks, slurm.array_parallelism at
  once; task t of n does the phase's units t, t + n, ... (kamado.slurm.jobs.PhaseTask). Then one "finish" job: the
  phases kept off arrays (trivial work), then the stage's `finish`, then DONE.json. A phase kept off arrays that an
  array phase comes after runs in a one-task job of its own, in its place;
- `run`: one single-task job (the local code path, `run_one_stage`);
- `rank_main` (training): one job of nodes × nproc_per_node tasks, one rank per task (kamado.slurm.jobs.train_rank),
  with SIGUSR1 slurm.signal_delay_s before the time limit (checkpoint and requeue: see kamado.slurm.jobs).
Every task of a phase is submitted, also on a resubmission: a task skips the units that have their done-marker,
so a chain submitted again after a failed task redoes only what is missing.

Each job depends `afterok` on the job before it (the previous stage's last job, or the previous array of its own
stage); a failed job cancels the rest of the chain (kill-on-invalid-dep). Job ids go to `<workdir>/slurm/jobs.json`,
logs to `<workdir>/slurm/<stage>/` (see kamado.slurm.chains: the folder is private to the submitter, jobs.json keeps
every chain, and a new chain is refused while an earlier one is queued). The cluster is checked (partition, node and
CPU counts: kamado.slurm.cluster) before anything is submitted. `--dry-run` writes the sbatch files, the pickled
calls they run and a `submit.sh` that submits them in order (kamado.slurm.dry_run); it needs no reachable cluster.
Every recipe value that reaches a script was validated when the recipe loaded (kamado.slurm.validate).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable

from kamado.pipeline import StageSpec, current
from kamado.recipe import Recipe, RecipeError
from kamado.slurm import jobs
from kamado.slurm.chains import Chain, private_slurm_dir, refuse_if_queued, submit_lock
from kamado.slurm.cluster import DEFAULT_MAX_ARRAY_SIZE, check_cluster, check_recipe, cluster_max_array_size, \
    dry_run_cluster, run_command
from kamado.slurm.dry_run import dry_run_folder, print_dry_run
from kamado.slurm.jobspec import JobSpec, array_params, base_params, job_entry, log_folder
from kamado.slurm.validate import check_slurm_values
from kamado.stage import Workspace

IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]+\Z")  # stage and role names: they go into file names and submit.sh


# ------------------------------------------------------------------ plan
def max_array_tasks(recipe: Recipe, cluster_max: int) -> int:
    """The most tasks one job array may have: slurm.max_array_tasks, below the cluster's MaxArraySize."""
    cap = recipe.slurm.max_array_tasks
    return min(cap, cluster_max) if cap else cluster_max


def _phased_jobs(recipe: Recipe, spec: StageSpec, partition: str, max_tasks: int) -> list[JobSpec]:
    """A phased stage: a job array per phase on arrays, a one-task job for phases kept off arrays that an array
    phase comes after, then the finish job (which runs the phases kept off arrays that come last)."""
    stage = spec.name
    out: list[JobSpec] = []
    array_sizes: dict[str, int] = {}
    ran_before: list[str] = []
    waiting: list[str] = []  # phases kept off arrays since the last array phase
    for phase in spec.entry("phases")(recipe):
        if not phase.slurm_array(recipe):
            waiting.append(phase.name)
            continue
        if waiting:  # they must be done before this array starts
            out.append(JobSpec(stage, waiting[0], jobs.phases_here, [(recipe, stage, waiting)],
                               base_params(recipe, partition, stage, waiting[0])))
            ran_before, waiting = ran_before + waiting, []
        n = max(1, min(phase.array_tasks(recipe), max_tasks))
        array_sizes[phase.name] = n
        out.append(JobSpec(stage, phase.name, jobs.phase_task, [(recipe, stage, phase.name, t, n) for t in range(n)],
                           array_params(recipe, partition, stage, phase.name), array=True, phase=True))
    out.append(JobSpec(stage, "finish", jobs.finish_stage, [(recipe, stage, array_sizes, ran_before, waiting)],
                       base_params(recipe, partition, stage, "finish")))
    return out


def _training_job(recipe: Recipe, stage: str, partition: str) -> JobSpec:
    s, cfg = recipe.slurm, recipe.stage_config(stage)
    params = base_params(recipe, partition, stage, "train")
    params.update(nodes=cfg.nodes, ntasks_per_node=cfg.nproc_per_node,
                  srun_args=["--kill-on-bad-exit=1"])  # one failed rank ends the job instead of a hang
    # SIGUSR1 (not submitit's USR2) to every task of the step, where the training loop listens for it;
    # a --signal in slurm.extra_sbatch still wins
    params["additional_parameters"] = {"signal": f"USR1@{s.signal_delay_s}", **params["additional_parameters"]}
    if s.gpus_per_node > 0:
        params["gpus_per_node"] = s.gpus_per_node
    return JobSpec(stage, "train", jobs.train_rank, [(recipe, stage)], params)


def plan(recipe: Recipe, stages: list[str], partition: str, max_array_size: int = DEFAULT_MAX_ARRAY_SIZE) -> list[JobSpec]:
    """The jobs of `stages`, in submission order (each `afterok` on the one before)."""
    max_tasks = max_array_tasks(recipe, max_array_size)
    specs: list[JobSpec] = []
    for stage in stages:
        spec = current().spec(stage)
        if spec.training:
            specs.append(_training_job(recipe, stage, partition))
        elif spec.run:
            specs.append(JobSpec(stage, "stage", jobs.single_stage, [(recipe, stage)],
                                 base_params(recipe, partition, stage, "stage")))
        else:
            specs += _phased_jobs(recipe, spec, partition, max_tasks)
    return specs


def pending_stages(recipe: Recipe, stages: list[str]) -> list[str]:
    """Stages to submit: everything from the first stage not done. A stage after one that is redone gets a new
    fingerprint anyway, so it is submitted too (its job skips it if it turns out to be done)."""
    ws = Workspace(recipe)
    for i, stage in enumerate(stages):
        if not ws.is_done(stage):
            return stages[i:]
    return []


# ------------------------------------------------------------------ submit
def _submit_one(recipe: Recipe, spec: JobSpec, dependency: str | None) -> str:
    import submitit

    executor = submitit.SlurmExecutor(folder=log_folder(recipe, spec.stage), max_num_timeout=recipe.slurm.max_requeues)
    executor.update_parameters(**spec.params, **({"dependency": dependency} if dependency else {}))
    if spec.array:
        submitted = executor.map_array(spec.fn, *zip(*spec.args))
        return submitted[0].job_id.split("_")[0]  # the array's id: afterok on it waits for every task
    return executor.submit(spec.fn, *spec.args[0]).job_id


def _check_names(specs: list[JobSpec]) -> None:
    for spec in specs:
        for what, name in (("stage", spec.stage), ("job role", spec.role)):
            if not IDENTIFIER.match(name):
                raise RecipeError(f"{what} {name!r}: use letters, digits and _ . - (it names the job's files)")


def submit(recipe: Recipe, stages: list[str], dry_run: bool = False, force: bool = False) -> int:
    """Submit the chain (or, with dry_run, write it); `force` submits even while an earlier chain for the same
    workdir is still queued (refused otherwise; jobs.json keeps both)."""
    todo = pending_stages(recipe, stages)
    if not todo:
        print("[kamado] every selected stage is done already; nothing to submit")
        return 0
    Workspace(recipe).require_previous(todo[0])  # a stage left out of the selection must be done already
    return submit_specs(recipe, todo, lambda partition, max_array_size: plan(recipe, todo, partition, max_array_size),
                        dry_run=dry_run, force=force)


def submit_specs(recipe: Recipe, todo: list[str], make_specs: Callable[[str, int], list[JobSpec]],
                 dry_run: bool = False, force: bool = False, dry_run_out: Path | None = None) -> int:
    """Check, then submit (or with dry_run, write to `dry_run_out`, default `dry_run_folder`) the jobs
    `make_specs(partition, max_array_size)` plans for `todo`, each `afterok` on the one before, recorded in
    jobs.json as one chain. Shared by the stages (`submit`) and by other job chains built elsewhere
    (kamado.slurm.eval_jobs)."""
    check_slurm_values(recipe)  # again: --workdir changes the workdir after the recipe was loaded
    check_recipe(recipe)
    private_slurm_dir(recipe.workdir)
    if dry_run:
        specs = make_specs(*dry_run_cluster(recipe, todo))
        _check_names(specs)
        print_dry_run(recipe, specs, todo, dry_run_out or dry_run_folder(recipe))
        return 0

    partition = check_cluster(recipe, todo)
    specs = make_specs(partition, cluster_max_array_size())
    _check_names(specs)
    with submit_lock(recipe.workdir):  # a second submitter waits here, then sees this chain's jobs queued
        replaces = refuse_if_queued(recipe.workdir, force)
        Workspace(recipe).write_resolved_recipe()  # training ranks read it (kamado.train.worker.load_workspace)
        chain = Chain(recipe.workdir, todo, replaces)
        submitted: list[str] = []
        last = None
        try:
            for spec in specs:
                job_id = _submit_one(recipe, spec, f"afterok:{last}" if last else None)
                submitted.append(job_id)
                chain.add(spec.stage, job_entry(spec, job_id))
                print(f"[kamado] {spec.stage}: submitted {spec.role} job {job_id}"
                      + (f" (array of {len(spec.args)})" if spec.array else "") + (f", after {last}" if last else ""))
                last = job_id
        except Exception:
            if submitted:  # no half chain: whatever this call submitted goes
                run_command(["scancel", *submitted])
                print(f"[kamado] submission failed; cancelled {' '.join(submitted)}", file=sys.stderr)
            raise
    print(f"[kamado] logs: {Path(recipe.workdir) / 'slurm'}; follow with: kamado slurm status RECIPE")
    return 0
