"""`kamado run --executor slurm`: submit every unfinished stage as submitit jobs and return at once.

- corpus: a job array over the shards without a done-marker (grouped into at most slurm.max_array_tasks or the
  cluster's MaxArraySize tasks, array_parallelism at once); with near dedup (or decontamination) one job array
  per dedup phase (signatures → buckets → verify → clusters → apply, see `dedup_phase_tasks`); then one
  "finish" job (the dedup phases themselves when they have no arrays, then report and DONE.json);
- tokenizer, release: one single-task job each (the local code path, `run_one_stage`);
- pretrain, sft, dpo: one job of nodes × nproc_per_node tasks, one rank per task (kamado.slurm.jobs.train_rank),
  with SIGUSR1 slurm.signal_delay_s before the time limit (checkpoint and requeue: see kamado.slurm.jobs).
Each job depends `afterok` on the job before it (the previous stage's last job, or the previous array of its
own stage); a failed job cancels the rest of the chain (kill-on-invalid-dep). Job ids go to
`<workdir>/slurm/jobs.json`, logs to `<workdir>/slurm/<stage>/` (see kamado.slurm.chains: the folder is private
to the submitter, jobs.json keeps every chain, and a new chain is refused while an earlier one is queued). The
cluster is checked (partition, node and CPU counts) before anything is submitted. `--dry-run` writes the sbatch
files, the pickled calls they run and a `submit.sh` that submits them in order (see `write_dry_run`); it needs no
reachable cluster: the checks that need one are skipped, with a line saying so. Every recipe value that reaches a
script was validated when the recipe loaded (kamado.slurm.validate).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import kamado
from kamado.pipeline import current
from kamado.recipe import Recipe, RecipeError
from kamado.slurm import jobs
from kamado.slurm.chains import Chain, jobs_path, private_slurm_dir, queued_jobs, read_record, recorded_job_ids, \
    refuse_if_queued, submit_lock
from kamado.slurm.validate import check_slurm_values, job_name, parse_extra_sbatch
from kamado.stage import Workspace
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize: task ids 0..1000


@dataclass
class JobSpec:
    stage: str
    role: str  # shards | dedup-<phase> | finish | stage | train
    fn: Callable
    args: list[tuple]  # one tuple per array task; a single tuple makes a plain job
    params: dict[str, Any]  # submitit SlurmExecutor parameters
    array: bool = False


# ------------------------------------------------------------------ plan
def _setup_lines(recipe: Recipe) -> list[str]:
    from kamado.train.launch import worker_env  # light: no torch

    env = worker_env()
    exports = {k: env[k] for k in ("OMP_NUM_THREADS", "PYTHONWARNINGS", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE")}
    if recipe.slurm.gpus_per_node == 0:
        exports["DS_ACCELERATOR"] = "cpu"  # DeepSpeed picks its accelerator at import time
    # Jobs import the same kamado as the submitter, installed or run from a checkout.
    code_root = str(Path(kamado.__file__).resolve().parents[1])
    lines = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    lines.append(f"export PYTHONPATH={shlex.quote(code_root)}${{PYTHONPATH:+:$PYTHONPATH}}")
    return lines + list(recipe.slurm.setup)  # the recipe's lines last: they may override ours


def _base_params(recipe: Recipe, partition: str, stage: str, role: str) -> dict[str, Any]:
    s = recipe.slurm
    params: dict[str, Any] = {
        "job_name": job_name(f"kamado-{recipe.name}-{stage}" + ("" if role in ("stage", "train") else f"-{role}")),
        "time": s.time_minutes,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": s.cpus_per_task,
        "setup": _setup_lines(recipe),
        # a failed job cancels its dependents instead of leaving them pending forever
        "additional_parameters": {"kill-on-invalid-dep": "yes", **parse_extra_sbatch(s.extra_sbatch)},
    }
    # no partition (a dry run without a cluster and none in the recipe): sbatch takes the cluster's default
    for key, value in (("partition", partition), ("account", s.account), ("qos", s.qos),
                       ("mem", f"{s.mem_gb}GB" if s.mem_gb else None)):
        if value:
            params[key] = value
    return params


def shards_to_do(recipe: Recipe, first: bool) -> list[int]:
    """Corpus shards without their done-marker. Only when the corpus stage is the first one submitted is its
    fingerprint known now (its input is done); then a folder started with that fingerprint keeps its finished
    shards (prepare() in the tasks keeps it too). Otherwise every shard is submitted."""
    from kamado.corpus.stage import shard_done_path
    from kamado.stage import STARTED

    n = recipe.corpus.num_shards
    ws = Workspace(recipe)
    started = ws.stage_dir("corpus") / STARTED
    if not first or not started.is_file() or json.loads(started.read_text()).get("fingerprint") != ws.fingerprint("corpus"):
        return list(range(n))
    return [i for i in range(n) if not shard_done_path(ws, i).is_file()]


def group_shards(shards: list[int], max_tasks: int) -> list[list[int]]:
    """At most max_tasks groups, round robin (shard i of the list goes to task i mod tasks): sizes differ by one."""
    tasks = max(1, min(len(shards), max_tasks))
    return [shards[t::tasks] for t in range(tasks)] if shards else []


def _max_array_tasks(recipe: Recipe, cluster_max: int) -> int:
    cap = recipe.slurm.max_array_tasks
    return min(cap, cluster_max) if cap else cluster_max


def dedup_phase_tasks(recipe: Recipe, max_tasks: int) -> dict[str, int]:
    """{phase: job array size} for the corpus dedup phases, in order; {} when the finish job runs them itself.

    The sizes are fixed at submit time, before any phase ran: signatures and apply have one unit per corpus shard;
    the units of buckets (bands × key ranges) and verify (pair slices) follow from how many documents the
    signatures phase finds, so those arrays get slurm.dedup_tasks tasks (default: corpus.num_shards) and task t of
    T does units t, t + T, ... (kamado.corpus.dedup.run_phase); clusters is one task."""
    from kamado.corpus.dedup import PHASES

    s, d = recipe.slurm, recipe.corpus.dedup
    if not (s.dedup_arrays if s.dedup_arrays is not None else d.near or bool(d.decontam_paths)):
        return {}
    n = recipe.corpus.num_shards
    later = s.dedup_tasks or n
    sizes = {"signatures": n, "buckets": later, "verify": later, "clusters": 1, "apply": n}
    return {phase: max(1, min(sizes[phase], max_tasks)) for phase in PHASES}


def plan(recipe: Recipe, stages: list[str], partition: str, max_array_size: int = DEFAULT_MAX_ARRAY_SIZE) -> list[JobSpec]:
    s = recipe.slurm
    specs: list[JobSpec] = []
    for stage in stages:
        if stage == "corpus":
            n = recipe.corpus.num_shards
            max_tasks = _max_array_tasks(recipe, max_array_size)
            groups = group_shards(shards_to_do(recipe, first=stage == stages[0]), max_tasks)
            if groups:  # none left when only a later job failed before
                params = {**_base_params(recipe, partition, stage, "shards"), "array_parallelism": s.array_parallelism}
                specs.append(JobSpec(stage, "shards", jobs.corpus_shards, [(recipe, g, n) for g in groups], params, array=True))
            phase_tasks = dedup_phase_tasks(recipe, max_tasks)
            for phase, size in phase_tasks.items():  # each an array after the one before; done units are skipped
                role = f"dedup-{phase}"
                params = {**_base_params(recipe, partition, stage, role), "array_parallelism": s.array_parallelism}
                specs.append(JobSpec(stage, role, jobs.dedup_phase, [(recipe, phase, t, size) for t in range(size)],
                                     params, array=True))
            specs.append(JobSpec(stage, "finish", jobs.corpus_finish, [(recipe, phase_tasks or None)],
                                 _base_params(recipe, partition, stage, "finish")))
        elif stage in current().training:
            cfg = recipe.stage_config(stage)
            params = _base_params(recipe, partition, stage, "train")
            params.update(nodes=cfg.nodes, ntasks_per_node=cfg.nproc_per_node,
                          srun_args=["--kill-on-bad-exit=1"])  # one failed rank ends the job instead of a hang
            # SIGUSR1 (not submitit's USR2) to every task of the step, where the training loop listens for it;
            # a --signal in slurm.extra_sbatch still wins
            params["additional_parameters"] = {"signal": f"USR1@{s.signal_delay_s}", **params["additional_parameters"]}
            if s.gpus_per_node > 0:
                params["gpus_per_node"] = s.gpus_per_node
            specs.append(JobSpec(stage, "train", jobs.train_rank, [(recipe, stage)], params))
        else:
            specs.append(JobSpec(stage, "stage", jobs.single_stage, [(recipe, stage)], _base_params(recipe, partition, stage, "stage")))
    return specs


def pending_stages(recipe: Recipe, stages: list[str]) -> list[str]:
    """Stages to submit: everything from the first stage not done. A stage after one that is redone gets a new
    fingerprint anyway, so it is submitted too (its job skips it if it turns out to be done)."""
    ws = Workspace(recipe)
    for i, stage in enumerate(stages):
        if not ws.is_done(stage):
            return stages[i:]
    return []


# ------------------------------------------------------------------ cluster checks
def _run(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _partitions(timeout: float = 15) -> tuple[list[str] | None, str]:
    """(`sinfo -h -o %P`'s partitions, "") when Slurm's commands are on PATH and the controller answers; else
    (None, why not): a dry run then skips the checks that need a cluster."""
    if not shutil.which("sinfo"):
        return None, "Slurm's commands (sinfo, sbatch) are not on PATH"
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # sinfo would spend a minute on DNS lookups before it fails
        return None, f"SLURM_CONF={conf} is not a file"
    try:
        out = _run(["sinfo", "-h", "-o", "%P"], timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"sinfo did not answer within {timeout:.0f} s"
    if out.returncode:
        return None, f"sinfo failed: {out.stderr.strip() or f'exit status {out.returncode}'}"
    return [p.strip() for p in out.stdout.split()], ""


def check_cluster(recipe: Recipe, stages: list[str], names: list[str] | None = None) -> str:
    """Fail before submitting anything when the recipe asks for what the cluster lacks; returns the partition.
    `names`: the partitions sinfo listed, when the caller asked already."""
    if names is None:
        names, unreachable = _partitions()
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
    info = _run(["scontrol", "show", "partition", partition, "-o"]).stdout
    total_nodes = int(_field(info, "TotalNodes") or 0)
    cpus = [int(c) for c in _run(["sinfo", "-h", "-N", "-p", partition, "-o", "%c"]).stdout.split() if c.isdigit()]
    max_cpus = max(cpus, default=0)
    s = recipe.slurm
    if max_cpus and s.cpus_per_task > max_cpus:
        raise RecipeError(f"key 'slurm.cpus_per_task': {s.cpus_per_task} CPUs per task, but the nodes of partition "
                          f"{partition!r} have at most {max_cpus}")
    for stage in stages:
        if stage not in current().training:
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
    out = _run(["scontrol", "show", "config"])
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    print(f"[kamado] MaxArraySize not found in `scontrol show config`; assuming Slurm's default {DEFAULT_MAX_ARRAY_SIZE}")
    return DEFAULT_MAX_ARRAY_SIZE


def check_recipe(recipe: Recipe) -> None:
    """Slurm settings that cannot work on any cluster."""
    s = recipe.slurm
    for key in ("time_minutes", "cpus_per_task", "array_parallelism"):
        if getattr(s, key) < 1:
            raise RecipeError(f"key 'slurm.{key}': must be at least 1, not {getattr(s, key)}")
    if s.max_array_tasks is not None and s.max_array_tasks < 1:
        raise RecipeError("key 'slurm.max_array_tasks': must be at least 1 (or null: the cluster's MaxArraySize)")
    if s.dedup_tasks is not None and s.dedup_tasks < 1:
        raise RecipeError("key 'slurm.dedup_tasks': must be at least 1 (or null: corpus.num_shards)")
    if s.max_requeues < 0:
        raise RecipeError(f"key 'slurm.max_requeues': must be 0 or more, not {s.max_requeues}")
    if not 0 < s.signal_delay_s < s.time_minutes * 60:
        raise RecipeError(f"key 'slurm.signal_delay_s': {s.signal_delay_s} s must be above 0 and below the time limit "
                          f"(slurm.time_minutes={s.time_minutes}, i.e. {s.time_minutes * 60} s)")


def _field(line: str, key: str) -> str | None:
    for token in line.split():
        if token.startswith(key + "="):
            return token.split("=", 1)[1]
    return None


# ------------------------------------------------------------------ submit
def _folder(recipe: Recipe, stage: str) -> Path:
    return Path(recipe.workdir) / "slurm" / stage


def render(spec: JobSpec, folder: Path, dependency: str | None = None, calls: Path | None = None) -> str:
    """The sbatch script of this job as submitit would write it (kamado.slurm.script). With `calls` (a dry run),
    the script first puts its pickled call (`calls/<array task or 0>.pkl`) where submitit's runner looks for it,
    `<folder>/<job id>_submitted.pkl`; a requeued job keeps the one there, which may hold a checkpoint."""
    from kamado.slurm.script import sbatch_script

    params = dict(spec.params)
    if dependency:
        params["dependency"] = dependency
    if calls is not None:
        f, c = shlex.quote(str(folder)), shlex.quote(str(calls))
        params["setup"] = [
            "# kamado dry run: this job's pickled call, where submitit's runner looks for it (kept on a requeue)",
            'if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then kamado_id=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}; '
            f'kamado_call={c}/${{SLURM_ARRAY_TASK_ID}}.pkl; else kamado_id=$SLURM_JOB_ID; kamado_call={c}/0.pkl; fi',
            f'[ -e {f}/"${{kamado_id}}_submitted.pkl" ] || cp "$kamado_call" {f}/"${{kamado_id}}_submitted.pkl"',
            *params.get("setup", []),
        ]
    command = shlex.join([sys.executable, "-u", "-m", "kamado.slurm.run_job", str(folder)])
    return sbatch_script(command, folder, params, len(spec.args) if spec.array else None)


def _entry(spec: JobSpec, job_id: str | None = None) -> dict:
    """The jobs.json record of one submitted job (without an id: the dry run's plan, submit.sh adds it)."""
    entry: dict[str, Any] = {"role": spec.role}
    if job_id is not None:
        entry = {"id": job_id, **entry, "submitted_at": time.time()}
    if spec.array:
        entry["tasks"] = len(spec.args)
    if spec.role == "shards":
        entry["shards"] = sorted(i for args in spec.args for i in args[1])
    return entry


def dry_run_folder(recipe: Recipe) -> Path:
    return Path(recipe.workdir) / "slurm" / "dry-run"


def write_dry_run(recipe: Recipe, specs: list[JobSpec], todo: list[str], out: Path) -> Path:
    """Everything needed to submit the planned jobs by hand, in `out` (emptied first); returns `out/submit.sh`.

    - `NN-<stage>-<role>.sbatch`: the job scripts, without dependencies (submit.sh passes them);
    - `NN-<stage>-<role>/<task>.pkl`: the call each job (array task) runs, pickled by submitit as a real
      submission would, which the script copies to where submitit's runner reads it;
    - `recipe.resolved.yaml`: the recipe the jobs run with (training ranks read it from the workdir);
    - `plan.json`: the jobs.json entries of the planned jobs, without their ids;
    - `submit.sh [--force-submit]`: the same checks as `kamado run --executor slurm` (a private <workdir>/slurm; no
      job of an earlier chain still queued, unless --force-submit), under the same lock, then `sbatch --parsable`
      of each script in order, each `--dependency=afterok:` on the one before; on a failed submission it cancels
      what it submitted; at the end it appends the chain to `<workdir>/slurm/jobs.json` (kamado.slurm.chains),
      so `kamado slurm status` follows it. Every path and value in it is shell-quoted."""
    from submitit.core.utils import DelayedSubmission

    from kamado.recipe import to_yaml

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "recipe.resolved.yaml").write_text(to_yaml(recipe), encoding="utf-8")
    workdir = Path(recipe.workdir).resolve()
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    code_root = Path(kamado.__file__).resolve().parents[1]
    plan_json = {"stages": todo, "jobs": [{"stage": spec.stage, "entry": _entry(spec)} for spec in specs]}
    (out / "plan.json").write_text(json.dumps(plan_json, indent=2), encoding="utf-8")
    lines = ["#!/bin/bash",
             f"# kamado dry run of recipe {q(recipe.name)}: {len(specs)} job(s) for {', '.join(todo)}, each after the one "
             "before (afterok)",
             "# usage: bash submit.sh [--force-submit]  (--force-submit: even while jobs of an earlier chain are queued)",
             "set -euo pipefail",
             f"workdir={q(workdir)}",
             f"export PYTHONPATH={q(code_root)}${{PYTHONPATH:+:$PYTHONPATH}}",
             f'kamado_chains() {{ {q(sys.executable)} -m kamado.slurm.chains "$@"; }}',
             'force=; if [ "${1:-}" = --force-submit ]; then force=--force; fi',
             'kamado_chains prepare "$workdir"  # <workdir>/slurm: 0700, refused when others can write into it',
             'if command -v flock >/dev/null; then exec 9>>"$workdir/slurm/submit.lock"; flock 9; fi  # one submitter at a time',
             'replaces=$(kamado_chains check "$workdir" ${force:+"$force"})  # refused while an earlier chain is queued',
             "submitted=()",
             "undo() {  # no half chain: what this script submitted goes",
             '  if [ ${#submitted[@]} -gt 0 ]; then scancel "${submitted[@]}"; '
             'echo "[kamado] submission failed; cancelled ${submitted[*]}" >&2; fi',
             "}",
             "trap undo ERR",
             f"mkdir -p {' '.join(q(workdir / 'slurm' / st) for st in dict.fromkeys(sp.stage for sp in specs))}",
             f"cp {q(out / 'recipe.resolved.yaml')} {q(workdir / 'recipe.resolved.yaml')}"]
    for i, spec in enumerate(specs, 1):
        name = f"{i:02d}-{spec.stage}-{spec.role}"
        calls = out / name
        calls.mkdir()
        for task, args in enumerate(spec.args):
            delayed = DelayedSubmission(spec.fn, *args)
            delayed.set_timeout(recipe.slurm.time_minutes, recipe.slurm.max_requeues)  # as submitit's executor does
            delayed.dump(calls / f"{task}.pkl")
        script = out / f"{name}.sbatch"
        script.write_text(render(spec, _folder(recipe, spec.stage).resolve(), None, calls.resolve()), encoding="utf-8")
        dep = f" --dependency=afterok:$j{i - 1}" if i > 1 else ""
        # stage and role are kamado's own identifiers; the job ids are digits
        lines += [f"j{i}=$(sbatch --parsable{dep} {q(script.resolve())}); j{i}=${{j{i}%%;*}}; submitted+=(\"$j{i}\")",
                  f'echo "[kamado] {spec.stage}: submitted {spec.role} job $j{i}' + (f' (array of {len(spec.args)})' if spec.array else '')
                  + (f', after $j{i - 1}"' if i > 1 else '"')]
    ids = " ".join(f'"$j{i}"' for i in range(1, len(specs) + 1))
    lines += [f'KAMADO_REPLACES="$replaces" kamado_chains record "$workdir" {q(out / "plan.json")} {ids}',
              f"printf '%s\\n' {q('[kamado] logs: ' + str(workdir / 'slurm') + '; follow with: kamado slurm status RECIPE')}"]
    submit_sh = out / "submit.sh"
    submit_sh.write_text("\n".join(lines) + "\n", encoding="utf-8")
    submit_sh.chmod(0o700)
    return submit_sh


def _submit_one(recipe: Recipe, spec: JobSpec, dependency: str | None) -> str:
    import submitit

    executor = submitit.SlurmExecutor(folder=_folder(recipe, spec.stage), max_num_timeout=recipe.slurm.max_requeues)
    executor.update_parameters(**spec.params, **({"dependency": dependency} if dependency else {}))
    if spec.array:
        submitted = executor.map_array(spec.fn, *zip(*spec.args))
        return submitted[0].job_id.split("_")[0]  # the array's id: afterok on it waits for every task
    return executor.submit(spec.fn, *spec.args[0]).job_id


def _shard_ranges(spec: JobSpec) -> str:
    shards = sorted(i for args in spec.args for i in args[1])
    return f"{len(shards)} of {spec.args[0][2]}" if len(shards) > 8 else ",".join(map(str, shards))


def _dry_run_cluster(recipe: Recipe, todo: list[str]) -> tuple[str, int]:
    """(partition, MaxArraySize) for a dry run: the cluster's checks when it answers; else both assumed, with a
    line saying which checks were skipped and what was assumed (the scripts can then be written on a laptop)."""
    names, unreachable = _partitions()
    if names is not None:
        return check_cluster(recipe, todo, names), cluster_max_array_size()
    partition = recipe.slurm.partition or ""
    print(f"[kamado] dry run without a reachable cluster ({unreachable}): skipped the cluster checks "
          f"(partition exists, nodes and CPUs per node) and assumed partition "
          f"{partition if partition else '(none: sbatch takes the cluster default)'}; skipped reading MaxArraySize "
          f"(scontrol show config) and assumed Slurm's default {DEFAULT_MAX_ARRAY_SIZE}")
    return partition, DEFAULT_MAX_ARRAY_SIZE


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
        partition, max_array_size = _dry_run_cluster(recipe, todo)
        specs = make_specs(partition, max_array_size)
        submit_sh = write_dry_run(recipe, specs, todo, dry_run_out or dry_run_folder(recipe))
        for i, spec in enumerate(specs, 1):
            print(f"# ---- {submit_sh.parent / f'{i:02d}-{spec.stage}-{spec.role}.sbatch'}: {spec.stage} / {spec.role}"
                  + (f", job array of {len(spec.args)} tasks" if spec.array else "")
                  + (f" for shards {_shard_ranges(spec)}" if spec.role == "shards" else ""))
            print((submit_sh.parent / f"{i:02d}-{spec.stage}-{spec.role}.sbatch").read_text(encoding="utf-8"))
        print(f"# ---- {submit_sh}: submits them in order, each after the one before (afterok)")
        print(submit_sh.read_text(encoding="utf-8"))
        print(f"[kamado] dry run: {len(specs)} job(s) for {', '.join(todo)}; nothing submitted; "
              f"submit them with: bash {shlex.quote(str(submit_sh))}")
        return 0

    partition = check_cluster(recipe, todo)
    specs = make_specs(partition, cluster_max_array_size())
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
                chain.add(spec.stage, _entry(spec, job_id))
                print(f"[kamado] {spec.stage}: submitted {spec.role} job {job_id}"
                      + (f" (array of {len(spec.args)})" if spec.array else "")
                      + (f" for shards {_shard_ranges(spec)}" if spec.role == "shards" else "") + (f", after {last}" if last else ""))
                last = job_id
        except Exception:
            if submitted:  # no half chain: whatever this call submitted goes
                _run(["scancel", *submitted])
                print(f"[kamado] submission failed; cancelled {' '.join(submitted)}", file=sys.stderr)
            raise
    print(f"[kamado] logs: {Path(recipe.workdir) / 'slurm'}; follow with: kamado slurm status RECIPE")
    return 0


# ------------------------------------------------------------------ status / cancel
def _jobs_path(recipe: Recipe) -> Path:
    return jobs_path(recipe.workdir)


def read_jobs(recipe: Recipe) -> dict:
    return read_record(recipe.workdir)


def job_states(job_id: str) -> list[str]:
    """Slurm states of a job (one per array task). slurmctld knows a job until MinJobAge after it ends; then
    sacct, where accounting is configured; else "GONE" (the DONE marker then says how the stage ended)."""
    out = _run(["scontrol", "show", "job", "-o", job_id])
    if out.returncode == 0:
        states = [_field(line, "JobState") for line in out.stdout.splitlines()]
        if any(states):
            return [s for s in states if s]
    acct = _run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
    if acct.returncode == 0 and acct.stdout.strip():
        return [line.split()[0] for line in acct.stdout.splitlines() if line.strip()]
    return ["GONE"]


FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
ACTIVE_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT", "RESIZING", "SIGNALING"}


def verdict(done: bool, states: list[str]) -> str:
    """One word per stage: DONE, FAILED (a job of it failed or was cancelled: its dependents never run),
    RUNNING, PENDING (also a requeued job waiting to restart), or "not done" (jobs gone, stage unfinished)."""
    if done:
        return "DONE"
    if any(s in FAILED_STATES for s in states):
        return "FAILED"
    if any(s in ACTIVE_STATES for s in states):
        return "RUNNING"
    if any(s in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED") for s in states):
        return "PENDING"
    return "not done"


def submitted_recipe(recipe: Recipe) -> Recipe:
    """The recipe the jobs run with (written at submit time, --set overrides included): status judges by it."""
    if not (Path(recipe.workdir) / "recipe.resolved.yaml").is_file():
        return recipe
    from kamado.train.worker import load_workspace  # light: yaml only

    return load_workspace(recipe.workdir).recipe


def stage_status(recipe: Recipe) -> dict[str, dict]:
    """{stage: {"done", "state", "jobs": [{"id", "role", "states", ...}], "shards_done": [...] (corpus)}} for every
    stage with recorded jobs."""
    recipe = submitted_recipe(recipe)
    ws = Workspace(recipe)
    out = {}
    for stage, entries in read_jobs(recipe).get("stages", {}).items():
        jobs_info = [{**e, "states": job_states(e["id"])} for e in entries]
        # a chain that is no recipe stage (e.g. `kamado eval --executor slurm`) is done when all its jobs completed
        done = ws.is_done(stage) if stage in recipe.stages else all(
            s == "COMPLETED" for j in jobs_info for s in j["states"]) and bool(jobs_info)
        info = {"done": done, "state": verdict(done, [s for j in jobs_info for s in j["states"]]), "jobs": jobs_info}
        if stage == "corpus":
            from kamado.corpus.stage import shard_done_path

            info["shards_done"] = [i for i in range(recipe.corpus.num_shards) if shard_done_path(ws, i).is_file()]
        out[stage] = info
    return out


def _summarize(states: list[str]) -> str:
    counts: dict[str, int] = {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    return ",".join(s if n == 1 else f"{s}×{n}" for s, n in counts.items())


def status(recipe: Recipe) -> int:
    if not _jobs_path(recipe).is_file():
        print(f"[kamado] no Slurm jobs recorded for {recipe.workdir} ({_jobs_path(recipe)} missing)")
        return 1
    recipe = submitted_recipe(recipe)
    for stage, info in stage_status(recipe).items():
        jobs_text = "  ".join(f"{j['role']} {j['id']}: {_summarize(j['states'])}" for j in info["jobs"])
        line = f"{stage:<10} {info['state']:<9} {jobs_text}"
        if "shards_done" in info and not info["done"]:
            n = recipe.corpus.num_shards
            missing = sorted(set(range(n)) - set(info["shards_done"]))
            line += f"  shards done {len(info['shards_done'])}/{n}" + (f" (missing: {_short(missing)})" if missing else "")
        print(line)
        if info["state"] == "FAILED":
            print(f"{'':<10} logs: {_folder(recipe, stage)}/*_log.err; fix the cause and submit again: "
                  f"finished work (shards, checkpoints) is kept")
    _print_earlier_chains(read_jobs(recipe))
    return 0


def _print_earlier_chains(record: dict) -> None:
    """The jobs of chains a --force-submit replaced that are still queued (they still write the stage folders)."""
    current = {e["id"] for entries in record["stages"].values() for e in entries}
    earlier = [i for i in recorded_job_ids(record) if i not in current]
    try:
        queued = queued_jobs(earlier)
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return  # the per-stage lines above already show what Slurm could tell
    if queued:
        print(f"[kamado] jobs of earlier chains still queued: {', '.join(f'{i} ({s})' for i, s in queued.items())}; "
              "`kamado slurm cancel` cancels them too")


def _short(ids: list[int]) -> str:
    return ",".join(map(str, ids[:10])) + (f",… ({len(ids)} in all)" if len(ids) > 10 else "")


def cancel(recipe: Recipe) -> int:
    """Cancel every job still queued of every chain recorded for the workdir (an older chain that a
    --force-submit replaced included)."""
    ids = recorded_job_ids(read_jobs(recipe))
    if not ids:
        print(f"[kamado] no Slurm jobs recorded for {recipe.workdir}")
        return 1
    try:
        ids = list(queued_jobs(ids))
    except RuntimeError as exc:  # squeue failed: let scancel judge every recorded id
        print(f"[kamado] {exc}; cancelling every recorded job", file=sys.stderr)
    if not ids:
        print(f"[kamado] no job recorded for {recipe.workdir} is still queued; nothing to cancel")
        return 0
    out = _run(["scancel", *ids])
    if out.returncode:
        print(f"[kamado] scancel: {out.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"[kamado] cancelled {' '.join(ids)} (jobs that had ended already are unaffected)")
    return 0
