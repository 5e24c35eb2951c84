"""A task of a stage's phase, wherever it runs: run it, record what it did; the finish reads the records.

Both executors call `run_phase_task` (kamado/local.py in a process pool or in its own process, kamado/slurm/ in
an array task), so a stage's report shows the same per-phase figures whichever ran it. The records live in the
stage folder (`<stage>/phases/<phase>-<task>.json`): a stage that is redone starts without stale ones.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kamado.durable import write_atomic
from kamado.pipeline import Phase, current

if TYPE_CHECKING:
    from kamado.recipe import Recipe
    from kamado.stage import Workspace


_in_process = False


def in_process() -> bool:
    """True while the local executor runs a phase's tasks one after another in its own process: a stage may then
    hand what one task read to a later task or phase (the corpus keeps decompressed lines for its apply phase)."""
    return _in_process


def set_in_process(value: bool) -> None:
    global _in_process
    _in_process = value


def stage_phases(recipe: Recipe, stage: str) -> list[Phase]:
    spec = current().spec(stage)
    return list(spec.entry("phases")(recipe)) if spec.phases else []


def phase_named(recipe: Recipe, stage: str, name: str) -> Phase:
    for phase in stage_phases(recipe, stage):
        if phase.name == name:
            return phase
    raise KeyError(f"stage {stage} has no phase {name!r}")


def record_path(ws: Workspace, stage: str, phase: str, task: int) -> Path:
    return ws.stage_dir(stage) / "phases" / f"{phase}-{task:05d}.json"


def run_phase_task(recipe: Recipe, ws: Workspace, stage: str, phase: str, task: int, num_tasks: int) -> dict:
    """Task `task` of `num_tasks` of `stage`'s phase `phase`, and its record (units, units found done, when)."""
    if not 0 <= task < num_tasks:
        raise ValueError(f"{stage} phase {phase}: task {task} is not in 0..{num_tasks - 1}")
    started = time.time()
    stats = phase_named(recipe, stage, phase).run_task(recipe, ws, task, num_tasks)
    record = {"phase": phase, "task": task, "num_tasks": num_tasks, "job": os.environ.get("SLURM_JOB_ID"),
              "items": int(stats.get("items", 0)), "skipped_done": int(stats.get("skipped_done", 0)),
              "started_at": started, "ended_at": time.time(), "peak_rss_mb": peak_rss_mb()}
    path = record_path(ws, stage, phase, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record), sync=False)  # timings: a record lost to a power cut means rerun the task
    return record


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux: ru_maxrss in KiB). One Slurm array task is one process,
    so its record holds the task's own peak; a pool worker's covers every task it ran before."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or emptied by a power cut (written without fsync)
        return None
    return record if isinstance(record, dict) else None


def phase_timings(ws: Workspace, stage: str, sizes: dict[str, int]) -> dict[str, dict]:
    """{phase: {tasks, items, skipped_done, seconds, peak_rss_mb}} from the records of `sizes` ({phase: tasks it ran
    with}); seconds run from the first task's start to the last one's end, peak_rss_mb is the largest task's. A
    missing record is an error naming it."""
    out = {}
    for phase, num_tasks in sizes.items():
        records = []
        for task in range(num_tasks):
            path = record_path(ws, stage, phase, task)
            record = _read_record(path)
            if record is None:
                raise RuntimeError(f"{stage}: {path} missing or unreadable: task {task} of phase {phase} did not finish; "
                                   f"rerun (on Slurm see {ws.root / 'slurm' / stage}/*_log.err and submit again)")
            records.append(record)
        out[phase] = {"tasks": num_tasks, "items": sum(r["items"] for r in records),
                      "seconds": round(max(r["ended_at"] for r in records) - min(r["started_at"] for r in records), 3),
                      "skipped_done": sum(r["skipped_done"] for r in records),
                      "peak_rss_mb": max(r.get("peak_rss_mb", 0.0) for r in records)}
    return out
