"""A pipeline with one stage whose phases mix job arrays and phases kept off arrays (`slurm_array` false), for
tests/slurm/test_phase_order.py: `prep` (off arrays) before the array phase `work`, then `tail` (off arrays).
Each task appends what it did to a log in the stage folder, so the test sees which ran, in which order."""

from __future__ import annotations

import json
from dataclasses import dataclass

from kamado.durable import write_atomic
from kamado.pipeline import PIPELINE, Phase, Pipeline, StageSpec
from kamado.stage import StageResult

STAGE = "ordered"


@dataclass
class OrderedConfig:
    units: int = 5


def _log(ws, phase: str, task: int, n: int, units: list[int]) -> None:
    path = ws.stage_dir(STAGE) / f"{phase}-{task}-of-{n}.json"
    write_atomic(path, json.dumps({"units": units}))


def _task(name: str):
    def run(recipe, ws, task: int, n: int) -> dict:
        if name != "prep":  # every phase after prep reads what prep left
            assert (ws.stage_dir(STAGE) / "prep-0-of-1.json").is_file(), f"{name} ran before prep"
        if name == "tail":
            assert len(list(ws.stage_dir(STAGE).glob("work-*.json"))) == 3, "tail ran before the work array"
        units = list(range(task, recipe.ordered.units if name == "work" else 1, n))
        _log(ws, name, task, n, units)
        return {"items": len(units), "skipped_done": 0}
    return run


def _off_arrays(recipe) -> bool:  # noqa: ARG001
    return False


def phases(recipe) -> list[Phase]:  # noqa: ARG001
    one = lambda recipe, ws=None: 1  # noqa: E731
    return [Phase("prep", one, _task("prep"), one, slurm_array=_off_arrays),
            Phase("work", lambda recipe, ws: recipe.ordered.units, _task("work"), lambda recipe: 3),
            Phase("tail", one, _task("tail"), one, slurm_array=_off_arrays)]


def finish(recipe, ws, timings: dict) -> StageResult:  # noqa: ARG001
    order = list(timings)
    counts = {"order": ",".join(order), **{f"{k}_tasks": t["tasks"] for k, t in timings.items()},
              **{f"{k}_items": t["items"] for k, t in timings.items()}}
    return StageResult(counts=counts, outputs=[])


ORDERED = StageSpec(STAGE, OrderedConfig, "a stage with phases on and off job arrays (tests)",
                    phases="tests.slurm.phase_order_pipeline:phases", finish="tests.slurm.phase_order_pipeline:finish",
                    default=False)

PIPELINE = Pipeline(stages=(*PIPELINE.stages, ORDERED), sections=PIPELINE.sections)
