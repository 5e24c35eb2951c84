"""Resume on another world size, for real on CPU (DeepSpeed ZeRO-2 and ZeRO-3, gloo): a run checkpointed by 2 ranks
continues on 1 and one checkpointed by 1 continues on 2, through DeepSpeed's universal checkpoint; the losses of the
resumed steps match the straight run's within float tolerance (same samples per step, same data order). A resume
that would change the samples per step is refused with the setting that keeps them."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from kamado.local import run_stages

from kamado.stage import Workspace
from kamado.train.data import batch_indices
from kamado.train.launch import worker_env
from tests.helpers import ROOT, tiny_recipe

STEPS = ["pretrain.max_steps=12", "pretrain.checkpoint_every=4", "pretrain.keep_checkpoints=3", "pretrain.log_every=1000",
         "pretrain.warmup_steps=2", "pretrain.eval_batches=1"]


def test_a_step_covers_the_same_samples_at_any_world_size():
    def step_samples(world, accum, step):
        return sorted(i for r in range(world) for m in range(accum) for i in batch_indices(step, m, accum, r, world, 4))

    for step in (0, 7):
        assert step_samples(2, 1, step) == step_samples(1, 2, step) == list(range(8 * step, 8 * step + 8))
        assert step_samples(1, 1, step) != step_samples(2, 1, step)  # fewer samples per step: another order


def losses(run_dir) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r.get("loss") is not None}


def resume_from(run, target, step: int, nproc: int, grad_accum: int):
    """A copy of `run` as it was after its checkpoint at `step`, resumed with another layout."""
    shutil.copytree(run, target)
    ckpts = target / "pretrain" / "checkpoints"
    for later in ckpts.glob("step*"):
        if int(later.name[4:]) > step:
            shutil.rmtree(later)
    (ckpts / "latest").write_text(f"step{step:07d}")
    resolved = target / "recipe.resolved.yaml"
    data = yaml.safe_load(resolved.read_text())
    data["workdir"] = str(target)
    data["pretrain"].update(nproc_per_node=nproc, grad_accum=grad_accum)
    resolved.write_text(yaml.safe_dump(data, sort_keys=False))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "kamado.train.pretrain", str(target)]
    return subprocess.run(cmd, env=worker_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("elastic")
    run_stages(tiny_recipe(base, *STEPS, workdir="prep"), ["corpus", "tokenizer"], lambda s: None)
    return base


def check_resumed(proc, target, straight: dict, saved_world: int, world: int, step: int, zero: int) -> None:
    """The resume resharded, continued from `step` with the straight run's losses, and saved per-rank again."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"saved by {saved_world} ranks, this run has {world}: resharding through DeepSpeed's universal checkpoint" in out
    assert "resumed from" in out and f"at step {step}" in out
    again = losses(target)
    assert sorted(again) == list(range(1, 13))
    for s in range(step + 1, 13):  # the same samples per step, summed in another order: float tolerance
        assert again[s] == pytest.approx(straight[s], rel=1e-4, abs=1e-4), (s, again[s], straight[s])
    ckpts = target / "pretrain" / "checkpoints"
    assert not list(ckpts.glob("universal-*"))  # the converted copy is gone after the load
    saved_meta = json.loads((ckpts / "step0000012" / "kamado.json").read_text())
    assert (saved_meta["world_size"], saved_meta["zero_stage"]) == (world, zero)
    # an ordinary per-rank checkpoint again (with load_universal on, DeepSpeed saves rank 0's ZeRO-3 model states only)
    per_rank = ["*optim_states.pt"] + (["zero_pp_rank_*_model_states.pt"] if zero == 3 else [])
    assert [len(list((ckpts / "step0000012").glob(p))) for p in per_rank] == [world] * len(per_rank)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("zero", [2, 3], ids=["zero2", "zero3"])
def test_resume_on_another_world_size(base, zero):
    """A straight run of 12 steps on 2 ranks; its step-4 checkpoint resumed on 1 rank (grad_accum 2: the same
    samples per step), whose step-8 checkpoint is resumed on 2 ranks again: 2 to 1 and 1 to 2 in one chain
    (~50 s at each ZeRO stage on 2 cores). At ZeRO-2, a resume that halves the samples per step is refused."""
    name = f"z{zero}"
    for stage in ("corpus", "tokenizer"):
        shutil.copytree(base / "prep" / stage, base / name / stage)
    recipe = tiny_recipe(base, *STEPS, "pretrain.nproc_per_node=2", "pretrain.grad_accum=1",
                         f"pretrain.zero_stage={zero}", workdir=name)
    run_stages(recipe, ["pretrain"], lambda s: None)
    straight = losses(base / name)
    assert sorted(straight) == list(range(1, 13))

    if zero == 2:  # the same world change with the samples per step halved is refused, naming the fix
        refused = resume_from(base / name, base / f"{name}-refused", 4, nproc=1, grad_accum=1)
        assert refused.returncode != 0
        assert "saved by 2 ranks with 8 samples per step; this run has 1 ranks and 4" in refused.stdout + refused.stderr
        assert "set grad_accum=2" in refused.stdout + refused.stderr

    one = base / f"{name}-2to1"
    check_resumed(resume_from(base / name, one, 4, nproc=1, grad_accum=2), one, straight, 2, 1, 4, zero)
    two = base / f"{name}-1to2"
    check_resumed(resume_from(one, two, 8, nproc=2, grad_accum=1), two, straight, 1, 2, 8, zero)
    assert Workspace(recipe).stage_dir("pretrain").is_dir()
