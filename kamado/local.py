"""The local executor: every selected stage on this machine, in order, each in the shape its spec declares.

- a `run` stage: its function, in this process;
- a phased stage: each phase's tasks in a process pool of the phase's `local_workers` (1: in this process,
  where a stage may keep what one phase read for the next), then its `finish`;
- a training stage: torchrun with `nproc_per_node` local ranks of its `rank_main` module.
It knows the shapes, not the stages (kamado/pipeline.py). The Slurm executor runs the same functions in jobs.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

from kamado.phase_tasks import phase_timings, run_phase_task, set_in_process, stage_phases
from kamado.pipeline import current
from kamado.recipe import Recipe, RecipeError
from kamado.stage import StageResult, Workspace, run_one_stage


def run_phases_here(recipe: Recipe, ws: Workspace, stage: str, names: list[str] | None = None,
                    log: Callable[[str], None] = print) -> dict[str, int]:
    """Run the stage's phases (or those in `names`) on this machine; returns {phase: tasks it ran with}."""
    sizes = {}
    for phase in stage_phases(recipe, stage):
        if names is not None and phase.name not in names:
            continue
        n = max(1, phase.num_tasks(recipe, ws))
        workers = max(1, min(phase.local_workers(recipe, ws), n))
        start = time.time()
        args = [(recipe, stage, phase.name, t, n) for t in range(n)]
        if workers == 1:
            set_in_process(True)
            try:
                for a in args:
                    _task(a)
            finally:
                set_in_process(False)
        else:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_task, args))
        sizes[phase.name] = n
        log(f"[kamado] {stage} {phase.name}: {n} task(s) on {workers} process(es) in {time.time() - start:.1f}s")
    return sizes


def _task(args: tuple) -> dict:
    recipe, stage, phase, task, n = args
    return run_phase_task(recipe, Workspace(recipe), stage, phase, task, n)


def run_here(recipe: Recipe, ws: Workspace, stage: str) -> StageResult:
    """The whole of one stage on this machine (the stage folder is prepared already)."""
    spec = current().spec(stage)
    if spec.training:
        from kamado.train.launch import run_training_stage

        return run_training_stage(recipe, ws, stage, spec.rank_main, spec.outputs)
    if spec.run:
        return spec.entry("run")(recipe, ws)
    sizes = run_phases_here(recipe, ws, stage)
    return spec.entry("finish")(recipe, ws, phase_timings(ws, stage, sizes))


def select_stages(recipe: Recipe, only: list[str] | None = None, until: str | None = None) -> list[str]:
    known = current().names
    for name in (only or []) + ([until] if until else []):
        if name not in known:
            raise RecipeError(f"unknown stage '{name}' (known: {', '.join(known)})")
        if name not in recipe.stages:
            raise RecipeError(f"stage '{name}' is not in this recipe's 'stages' list {recipe.stages}")
    stages = list(recipe.stages)
    if until:
        stages = stages[: stages.index(until) + 1]
    if only:
        stages = [s for s in stages if s in only]
    return stages


def start_fresh(recipe: Recipe, stages: list[str], log: Callable[[str], None] = print) -> None:
    """`--fresh STAGE`: move each named stage's folder aside, so it starts from nothing (the stages after it are
    redone too: their upstream marker is gone)."""
    ws = Workspace(recipe)
    with ws.lock():
        for stage in stages:
            ws.set_aside(stage, ["--fresh"], log)


def run_stages(recipe: Recipe, stages: list[str], log: Callable[[str], None] = print,
               fresh: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """Run the selected stages in order on this machine; returns {stage: 'skipped' | 'done'}.

    Everything that can refuse the run (unmarked folders, a live writer, a lowered max_steps) is checked
    before the first stage starts."""
    ws = Workspace(recipe)
    ws.preflight(stages, fresh)
    start_fresh(recipe, list(fresh), log)
    ws.write_resolved_recipe()
    return {stage: run_one_stage(recipe, stage, lambda r, w, s=stage: run_here(r, w, s), log) for stage in stages}
