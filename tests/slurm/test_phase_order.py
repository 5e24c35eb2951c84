"""The planner keeps a stage's phase order whatever runs where: a phase kept off job arrays (`slurm_array` false)
that an array phase comes after gets a one-task job of its own in its place; those after the last array run in
the finish job; the finish sees every phase's timings in declared order. The jobs' functions run here, in the
order Slurm would run them (afterok); the stage is no kamado stage (tests/slurm/phase_order_pipeline.py)."""
from __future__ import annotations

from kamado.pipeline import PIPELINE_ENV
from kamado.recipe import load_recipe
from kamado.slurm.executor import plan
from kamado.slurm.jobs import finish_stage, phase_task, phases_here
from kamado.stage import Workspace
from tests.helpers import ROOT


def test_phases_off_arrays_run_in_their_place(tmp_path, monkeypatch):
    monkeypatch.setenv(PIPELINE_ENV, "tests.slurm.phase_order_pipeline:PIPELINE")
    recipe = load_recipe(ROOT / "recipes" / "tiny-cpu.yaml", [f"workdir={tmp_path / 'run'}", "stages=[ordered]"])
    specs = plan(recipe, ["ordered"], "debug")
    assert [(s.fn, s.role, s.array, len(s.args)) for s in specs] == [
        (phases_here, "prep", False, 1), (phase_task, "work", True, 3), (finish_stage, "finish", False, 1)]
    assert specs[0].args[0][1:] == ("ordered", ["prep"])
    assert specs[-1].args[0][1:] == ("ordered", {"work": 3}, ["prep"], ["tail"])
    assert [p.params["job_name"] for p in specs] == [f"kamado-{recipe.name}-ordered-{r}" for r in ("prep", "work", "finish")]
    # every job runs the submitter's pipeline (sbatch may be told not to pass the environment on)
    assert "export KAMADO_PIPELINE=tests.slurm.phase_order_pipeline:PIPELINE" in specs[0].params["setup"]

    for spec in specs:  # one job after the other, as afterok runs them
        results = [spec.fn(*args) for args in spec.args]
    assert results == ["done"]
    counts = Workspace(recipe).read_done("ordered")["counts"]
    assert counts == {"order": "prep,work,tail", "prep_tasks": 1, "work_tasks": 3, "tail_tasks": 1,
                      "prep_items": 1, "work_items": 5, "tail_items": 1}  # units 0..4 over 3 array tasks
    assert phase_task(*specs[1].args[0]) == {"skipped": True}  # done: a late or requeued task does nothing
    monkeypatch.delenv(PIPELINE_ENV)
    assert not [line for line in plan(recipe, ["corpus"], "debug")[0].params["setup"] if PIPELINE_ENV in line]
