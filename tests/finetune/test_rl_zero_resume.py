"""Reward model and PPO under ZeRO-1 and ZeRO-3, and their exact resume, for real on 2 CPU ranks from the demo run's
SFT model: each stage trains and exports at both stages; a run stopped by SIGUSR1 mid-way and run again gives the
same per-step losses as the straight run (reward at ZeRO-1, PPO at ZeRO-3, its value model started from the reward
model and trained in two minibatches per pass)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kamado.stage import Workspace
from tests.finetune.helpers import TINY_RUN_OVERRIDES, copy_stages, metric_rows, run_from_demo
from tests.helpers import EXAMPLES, ROOT, tiny_recipe

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

RL = ["stages=[corpus,tokenizer,pretrain,sft,reward,ppo]",
      f"reward.data=[{EXAMPLES / 'preference' / 'pairs.jsonl'}]", "reward.max_steps=30", "reward.log_every=10",
      "reward.checkpoint_every=1000", "reward.warmup_steps=2",
      f"ppo.data=[{EXAMPLES / 'sft' / 'instructions.jsonl'}]", "ppo.max_steps=4", "ppo.log_every=1", "ppo.checkpoint_every=1000",
      "ppo.micro_batch_size=4", "ppo.minibatches=2", "ppo.max_new_tokens=8"]


def zero(n: int) -> list[str]:
    return [f"reward.zero_stage={n}", f"ppo.zero_stage={n}"]


@pytest.fixture(scope="module", params=[1, 3], ids=["zero1", "zero3"])
def straight(request, tiny_run, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"rl-zero{request.param}")
    return request.param, base, run_from_demo(tiny_run, base, "straight", ["reward", "ppo"], *RL, *zero(request.param))


def test_reward_and_ppo_train_and_export_under_zero(straight):
    stage, _, ws = straight
    for name in ("reward", "ppo"):
        ds = json.loads((ws.stage_dir(name) / "deepspeed_config.json").read_text())
        assert ds["zero_optimization"]["stage"] == stage
        assert (ws.stage_dir(name) / "hf" / "model.safetensors").is_file()
    reward = metric_rows(ws, "reward")
    assert len(reward) == 30 and np.mean([r["loss"] for r in reward[-5:]]) < np.mean([r["loss"] for r in reward[:5]])
    assert json.loads((ws.stage_dir("reward") / "accuracy.json").read_text())["val_accuracy"] is not None
    ppo = metric_rows(ws, "ppo")
    assert len(ppo) == 4 and all(np.isfinite(r["loss"]) and r["value_loss"] >= 0 for r in ppo)
    result = json.loads((ws.stage_dir("ppo") / "result.json").read_text())
    assert result["value_source"] == str(ws.stage_dir("reward") / "hf")  # value_from auto: the reward model
    assert result["minibatches"] == 2 and result["steps"] == 4


def _cli(workdir, stage: str, overrides: list[str]):
    args = [sys.executable, "-m", "kamado.cli", "run", str(ROOT / "recipes" / "tiny-cpu.yaml"), "--only", stage,
            "--set", f"workdir={workdir}", *[x for o in [*TINY_RUN_OVERRIDES, *overrides] for x in ("--set", o)]]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop_then_resume(ws: Workspace, stage: str, overrides: list[str], after_rows: int) -> int:
    """Run `stage` through the CLI, SIGUSR1 one rank once `after_rows` steps are logged, check the stop, run it
    again; returns the step it stopped at."""
    proc = _cli(ws.root, stage, overrides)
    metrics = ws.stage_dir(stage) / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= after_rows:
            break
        time.sleep(0.02)
    pids = subprocess.run(["pgrep", "-f", f"kamado.finetune.{stage} {ws.root}"], capture_output=True, text=True).stdout.split()
    assert pids, f"no {stage} rank found to signal"
    os.kill(int(pids[-1]), signal.SIGUSR1)  # one rank only: the ranks agree on stopping
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1 and "stopped (signal)" in out, out
    stopped_at = json.loads((ws.stage_dir(stage) / "STOPPED.json").read_text())["step"]
    assert not ws.is_done(stage)
    proc = _cli(ws.root, stage, overrides)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"at step {stopped_at}" in out and ws.is_done(stage)
    return stopped_at


def test_stopped_run_resumes_with_the_same_losses(straight, tiny_run):
    """ZeRO-1: the reward stage; ZeRO-3: PPO (reward copied from the straight run, as its value model starts there)."""
    stage, base, ws_straight = straight
    overrides = [*RL, *zero(stage)]
    resumed = base / "resumed"
    if stage == 1:
        copy_stages(tiny_run, resumed)
        ws = Workspace(tiny_recipe(base, *TINY_RUN_OVERRIDES, *overrides, workdir="resumed"))
        stopped_at = _stop_then_resume(ws, "reward", overrides, after_rows=5)
        assert 5 <= stopped_at < 30
        assert [r["loss"] for r in metric_rows(ws, "reward")] == [r["loss"] for r in metric_rows(ws_straight, "reward")]
    else:
        copy_stages(tiny_run, resumed)
        copy_stages(ws_straight.recipe, resumed, ("reward",))
        ws = Workspace(tiny_recipe(base, *TINY_RUN_OVERRIDES, *overrides, workdir="resumed"))
        stopped_at = _stop_then_resume(ws, "ppo", overrides, after_rows=1)
        assert 1 <= stopped_at < 4
        keys = ("loss", "reward", "kl", "value_loss")
        assert [[r[k] for k in keys] for r in metric_rows(ws, "ppo")] == [[r[k] for k in keys] for r in metric_rows(ws_straight, "ppo")]
