"""The corpus stage's phase array tasks (kamado.slurm.jobs.PhaseTask, generic) without a cluster: arrays of a size
fixed before the work units are known cover every unit once, a rerun task skips what is done, and the finish job
built on their records gives the local executor's corpus; how the planner sizes the arrays from the stage's
phases. The same functions run as Slurm array tasks in test_executor.py."""
from __future__ import annotations

import json

import pytest

from kamado.corpus.dedup import PHASES
from kamado.local import run_stages
from kamado.phase_tasks import record_path
from kamado.recipe import load_recipe
from kamado.slurm.executor import plan
from kamado.slurm.jobs import finish_stage, phase_task
from kamado.stage import Workspace
from tests.slurm.test_executor import kept_ids, write_recipe

# 3 bucket units (exact; the 20 bands in one unit, a small corpus; containment); 1 pair slice
SIZES = {"filter": 4, "signatures": 3, "buckets": 5, "verify": 2, "clusters": 1, "apply": 3}


def run_arrays(recipe) -> list[list[dict]]:
    """Every task of every phase array, in order, as the array tasks run them; returns their records."""
    return [[phase_task(recipe, "corpus", phase, t, n) for t in range(n)] for phase, n in SIZES.items()]


def test_phase_arrays_cover_every_unit_and_finish_matches_local(tmp_path):
    path = write_recipe(tmp_path, 40)
    sets = ["corpus.dedup.near=true"]
    recipe = load_recipe(path, sets)
    ws = Workspace(recipe)
    records = dict(zip(SIZES, run_arrays(recipe)))
    assert all(r["skipped_done"] == 0 for rs in records.values() for r in rs), records
    assert [r["items"] for r in records["filter"]] == [1, 1, 1, 1]  # one shard per task
    assert [r["items"] for r in records["buckets"]] == [1, 1, 1, 0, 0]  # units t, t+5, ... : 3 units over 5 tasks
    assert [r["items"] for r in records["verify"]] == [1, 0]  # one pair slice: the second task has nothing to do
    again = phase_task(recipe, "corpus", "buckets", 1, SIZES["buckets"])  # a requeued task: every unit of it is done
    assert again["items"] == again["skipped_done"] == 1
    assert finish_stage(recipe, "corpus", SIZES, [], []) == "done"

    local = load_recipe(path, ["workdir=run-local", *sets])
    run_stages(local, ["corpus"], log=lambda s: None)
    assert kept_ids(ws) == kept_ids(Workspace(local)) and "near" not in kept_ids(ws)
    a, b = (json.loads((w.stage_dir("corpus") / "report.json").read_text()) for w in (Workspace(local), ws))
    phases = b["dedup"].pop("phases")
    assert {k: p["items"] for k, p in phases.items()} == {k: p["tasks"] for k, p in a["dedup"].pop("phases").items()}
    assert phases["buckets"]["tasks"] == 5 and phases["buckets"]["skipped_done"] == 1  # the rerun task's record
    assert b == a
    assert phase_task(recipe, "corpus", "apply", 0, 3) == {"skipped": True}  # the stage is done: nothing to do


def test_finish_refuses_a_phase_task_that_did_not_finish(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, 20), ["corpus.dedup.near=true"])
    ws = Workspace(recipe)
    run_arrays(recipe)
    record_path(ws, "corpus", "verify", 1).unlink()
    with pytest.raises(RuntimeError, match=r"verify-00001\.json missing or unreadable: task 1 of phase verify did not finish"):
        finish_stage(recipe, "corpus", SIZES, [], [])
    assert not ws.is_done("corpus")
    record_path(ws, "corpus", "verify", 1).write_text("")  # emptied by a power cut (records are written without fsync)
    with pytest.raises(RuntimeError, match=r"verify-00001\.json missing or unreadable"):
        finish_stage(recipe, "corpus", SIZES, [], [])
    assert not ws.is_done("corpus")


def _arrays(recipe, max_array_size: int = 1000) -> tuple[list[tuple[str, int]], tuple]:
    """([(phase, array size)], the finish job's (array sizes, phases run before it, phases it runs)) as planned."""
    specs = plan(recipe, ["corpus"], "debug", max_array_size)
    assert specs[-1].role == "finish" and len(specs[-1].args) == 1
    return [(s.role, len(s.args)) for s in specs if s.array], specs[-1].args[0][2:]


def test_phase_array_sizes(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, 20), ["corpus.num_shards=6"])
    # exact dedup only: the finish job runs the dedup phases itself
    assert _arrays(recipe) == ([("filter", 6)], ({"filter": 6}, [], list(PHASES)))
    recipe.corpus.dedup.near = True
    sizes = {"filter": 6, "signatures": 6, "buckets": 6, "verify": 6, "clusters": 1, "apply": 6}
    assert _arrays(recipe) == (list(sizes.items()), (sizes, [], []))
    recipe.slurm.dedup_tasks = 40
    sizes = {"filter": 6, "signatures": 6, "buckets": 16, "verify": 16, "clusters": 1, "apply": 6}
    assert _arrays(recipe, max_array_size=16) == (list(sizes.items()), (sizes, [], []))
    recipe.slurm.dedup_arrays = False
    assert _arrays(recipe)[0] == [("filter", 6)]
