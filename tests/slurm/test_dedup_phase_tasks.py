"""The dedup phase array tasks (kamado.slurm.jobs.DedupPhase) without a cluster: arrays of a size fixed before the
work units are known cover every unit once, a rerun task skips what is done, and the finish job built on their
outputs gives the local executor's corpus. The same functions run as Slurm array tasks in test_executor.py."""
from __future__ import annotations

import json

import pytest

from kamado.corpus.dedup import PHASES
from kamado.corpus.stage import run_shard
from kamado.recipe import load_recipe
from kamado.slurm.executor import dedup_phase_tasks
from kamado.slurm.jobs import corpus_finish, dedup_phase, phase_record_path
from kamado.local import run_stages
from kamado.stage import Workspace
from tests.slurm.test_executor import kept_ids, write_recipe

SIZES = {"signatures": 3, "buckets": 5, "verify": 2, "clusters": 1, "apply": 3}  # 4 shards; 22 bucket units; 1 slice


def test_phase_arrays_cover_every_unit_and_finish_matches_local(tmp_path):
    path = write_recipe(tmp_path, 40)
    sets = ["corpus.dedup.near=true"]
    recipe = load_recipe(path, sets)
    ws = Workspace(recipe)
    ws.prepare("corpus")
    for shard in range(recipe.corpus.num_shards):
        run_shard(recipe, ws, shard, recipe.corpus.num_shards)
    for phase in PHASES:
        stats = [dedup_phase(recipe, phase, t, SIZES[phase]) for t in range(SIZES[phase])]
        assert all(s["skipped_done"] == 0 for s in stats), (phase, stats)
        if phase == "buckets":  # units t, t+5, ... : 22 units over 5 tasks
            assert [s["items"] for s in stats] == [5, 5, 4, 4, 4]
        if phase == "verify":  # one pair slice: the second task has nothing to do
            assert [s["items"] for s in stats] == [1, 0]
    again = dedup_phase(recipe, "buckets", 1, SIZES["buckets"])  # a requeued task: every unit of it is done
    assert again["items"] == again["skipped_done"] == 5
    assert corpus_finish(recipe, SIZES) == "done"

    local = load_recipe(path, ["workdir=run-local", *sets])
    run_stages(local, ["corpus"], log=lambda s: None)
    assert kept_ids(ws) == kept_ids(Workspace(local)) and "near" not in kept_ids(ws)
    a, b = (json.loads((w.stage_dir("corpus") / "report.json").read_text()) for w in (Workspace(local), ws))
    phases = b["dedup"].pop("phases")
    assert {k: p["items"] for k, p in phases.items()} == {k: p["tasks"] for k, p in a["dedup"].pop("phases").items()}
    assert phases["buckets"]["tasks"] == 5 and phases["buckets"]["skipped_done"] == 5  # the rerun task's record
    assert b == a


def test_finish_refuses_a_phase_task_that_did_not_finish(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, 20), ["corpus.dedup.near=true"])
    ws = Workspace(recipe)
    ws.prepare("corpus")
    for shard in range(recipe.corpus.num_shards):
        run_shard(recipe, ws, shard, recipe.corpus.num_shards)
    for phase in PHASES:
        for t in range(SIZES[phase]):
            dedup_phase(recipe, phase, t, SIZES[phase])
    phase_record_path(ws, "verify", 1).unlink()
    with pytest.raises(RuntimeError, match=r"verify-00001\.json missing: task 1 of the verify array did not finish"):
        corpus_finish(recipe, SIZES)
    assert not ws.is_done("corpus")


def test_dedup_phase_array_sizes(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, 20), ["corpus.num_shards=6"])
    assert dedup_phase_tasks(recipe, 1000) == {}  # exact dedup only: the finish job runs the phases
    recipe.corpus.dedup.near = True
    assert dedup_phase_tasks(recipe, 1000) == {"signatures": 6, "buckets": 6, "verify": 6, "clusters": 1, "apply": 6}
    recipe.slurm.dedup_tasks = 40
    assert dedup_phase_tasks(recipe, 16) == {"signatures": 6, "buckets": 16, "verify": 16, "clusters": 1, "apply": 6}
    recipe.slurm.dedup_arrays = False
    assert dedup_phase_tasks(recipe, 1000) == {}
