"""`kamado slurm status | cancel RECIPE`: where each stage's recorded jobs stand (one word per stage, the jobs'
Slurm states and, for a phased stage that is not done, how many of each phase's array tasks left their record),
and cancelling every job of the workdir's chains that is still queued."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kamado.phase_tasks import record_path
from kamado.recipe import Recipe
from kamado.slurm.chains import jobs_path, queued_jobs, read_record, recorded_job_ids
from kamado.slurm.cluster import field, run_command
from kamado.slurm.jobspec import log_folder
from kamado.stage import Workspace

FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
ACTIVE_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT", "RESIZING", "SIGNALING"}


def read_jobs(recipe: Recipe) -> dict:
    return read_record(recipe.workdir)


def job_states(job_id: str) -> list[str]:
    """Slurm states of a job (one per array task). slurmctld knows a job until MinJobAge after it ends; then
    sacct, where accounting is configured; else "GONE" (the DONE marker then says how the stage ended)."""
    out = run_command(["scontrol", "show", "job", "-o", job_id])
    if out.returncode == 0:
        states = [field(line, "JobState") for line in out.stdout.splitlines()]
        if any(states):
            return [s for s in states if s]
    acct = run_command(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
    if acct.returncode == 0 and acct.stdout.strip():
        return [line.split()[0] for line in acct.stdout.splitlines() if line.strip()]
    return ["GONE"]


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


def phase_records(ws: Workspace, stage: str, entries: list[dict]) -> dict[str, list[int]]:
    """{phase: array task ids without their record} of the stage's phase arrays, in job order."""
    return {e["role"]: [t for t in range(e["tasks"]) if not record_path(ws, stage, e["role"], t).is_file()]
            for e in entries if e.get("phase")}


def stage_status(recipe: Recipe) -> dict[str, dict]:
    """{stage: {"done", "state", "jobs": [{"id", "role", "states", ...}], "phases": {phase: [tasks without a
    record]}}} for every stage with recorded jobs ("phases": its phase arrays, empty for other stages)."""
    recipe = submitted_recipe(recipe)
    ws = Workspace(recipe)
    out = {}
    for stage, entries in read_jobs(recipe).get("stages", {}).items():
        jobs_info = [{**e, "states": job_states(e["id"])} for e in entries]
        # a chain that is no recipe stage (e.g. `kamado eval --executor slurm`) is done when all its jobs completed
        done = ws.is_done(stage) if stage in recipe.stages else all(
            s == "COMPLETED" for j in jobs_info for s in j["states"]) and bool(jobs_info)
        out[stage] = {"done": done, "state": verdict(done, [s for j in jobs_info for s in j["states"]]),
                      "jobs": jobs_info, "phases": phase_records(ws, stage, entries)}
    return out


def _summarize(states: list[str]) -> str:
    counts: dict[str, int] = {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    return ",".join(s if n == 1 else f"{s}×{n}" for s, n in counts.items())


def _short(ids: list[int]) -> str:
    return ",".join(map(str, ids[:10])) + (f",… ({len(ids)} in all)" if len(ids) > 10 else "")


def status(recipe: Recipe) -> int:
    if not jobs_path(recipe.workdir).is_file():
        print(f"[kamado] no Slurm jobs recorded for {recipe.workdir} ({jobs_path(recipe.workdir)} missing)")
        return 1
    recipe = submitted_recipe(recipe)
    for stage, info in stage_status(recipe).items():
        jobs_text = "  ".join(f"{j['role']} {j['id']}: {_summarize(j['states'])}" for j in info["jobs"])
        line = f"{stage:<10} {info['state']:<9} {jobs_text}"
        if not info["done"]:
            tasks = {j["role"]: j["tasks"] for j in info["jobs"] if j.get("phase")}
            for phase, missing in info["phases"].items():
                line += (f"  {phase} tasks done {tasks[phase] - len(missing)}/{tasks[phase]}"
                         + (f" (missing: {_short(missing)})" if missing else ""))
        print(line)
        if info["state"] == "FAILED":
            print(f"{'':<10} logs: {log_folder(recipe, stage)}/*_log.err; fix the cause and submit again: "
                  f"finished work (done work units, checkpoints) is kept")
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
    out = run_command(["scancel", *ids])
    if out.returncode:
        print(f"[kamado] scancel: {out.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"[kamado] cancelled {' '.join(ids)} (jobs that had ended already are unaffected)")
    return 0
