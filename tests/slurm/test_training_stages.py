"""Every training stage goes to Slurm like pretraining: `kamado run --executor slurm` with reward and PPO in the
recipe submits the whole chain (corpus array, tokenizer, then pretrain, reward and ppo as 2-node jobs of one rank
per node, gloo), each afterok on the one before, and every stage ends DONE."""
from __future__ import annotations

import json

import pytest

from kamado.cli import main
from kamado.recipe import load_recipe
from kamado.stage import Workspace
from tests.helpers import write_jsonl
from tests.slurm.test_executor import HOW, WHAT, WHERE, WHO, job_info, wait_until_done, write_recipe

pytestmark = [pytest.mark.slurm, pytest.mark.distributed]

# In the corpus' own words: the tiny tokenizer (450 pieces) keeps these short
PROMPTS = [f"{who}は{where}で何をしましたか。" for who, where in zip(WHO, WHERE)]
TRAINING = ["pretrain", "reward", "ppo"]


def test_reward_and_ppo_run_as_two_node_jobs(slurm_cluster, tmp_path, capsys):
    path = write_recipe(tmp_path, 60)
    pref = write_jsonl(tmp_path / "pref.jsonl", [{"prompt": p, "chosen": f"{what}が、{HOW[0]}。", "rejected": f"{what}。"}
                                                 for p, what in zip(PROMPTS, WHAT)])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    short = ["nodes=2", "nproc_per_node=1", "seq_len=128", "micro_batch_size=2", "warmup_steps=0", "log_every=1"]
    sets = ["stages=[corpus,tokenizer,pretrain,reward,ppo]",
            f"reward.data=[{pref}]", "reward.max_steps=3", "reward.validation_fraction=0.2",
            # the PPO reward is the reward stage's model: the chain's last job uses the one before it
            f"ppo.data=[{prompts}]", "ppo.reward=model", "ppo.max_steps=2", "ppo.max_new_tokens=8",
            *[f"{stage}.{s}" for stage in ("reward", "ppo") for s in short]]
    args = ["run", str(path), "--executor", "slurm"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    recipe = load_recipe(path, sets)
    ws = Workspace(recipe)
    record = json.loads((ws.root / "slurm" / "jobs.json").read_text())["stages"]
    assert {stage: [e["role"] for e in record[stage]] for stage in TRAINING} == {s: ["train"] for s in TRAINING}

    wait_until_done(recipe, "ppo", timeout=420)
    for stage in TRAINING:
        assert ws.is_done(stage), stage
        job = job_info(record[stage][0]["id"])[0]
        assert (job["JobState"], job["NumNodes"], job["NumTasks"]) == ("COMPLETED", "2", "2"), (stage, job)
        assert (ws.stage_dir(stage) / "hf" / "config.json").is_file()
    times = [(job_info(record[stage][0]["id"])[0]["StartTime"], job_info(record[stage][0]["id"])[0]["EndTime"])
             for stage in TRAINING]
    assert all(after[0] >= before[1] for before, after in zip(times, times[1:])), times  # one after the other
    reward_rows = [json.loads(r) for r in (ws.stage_dir("reward") / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in reward_rows if "loss" in r] == [1, 2, 3]
    accuracy = json.loads((ws.stage_dir("reward") / "accuracy.json").read_text())  # fine-tuning's export ran
    assert (accuracy["train_pairs"], accuracy["val_pairs"]) == (8, 2) and 0 <= accuracy["val_accuracy"] <= 1
    ppo = json.loads((ws.stage_dir("ppo") / "result.json").read_text())
    assert (ppo["steps"], ppo["reward"], ppo["world_size"]) == (2, "model", 2)
    log = "".join(p.read_text() for p in (ws.root / "slurm" / "ppo").glob("*_log.out"))
    assert "ppo: rank 0 of 2 started on n1" in log and "ppo: rank 1 of 2 started on n2" in log, log[-2000:]

    capsys.readouterr()
    assert main(["slurm", "status", str(path)]) == 0
    states = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    assert states == {s: "DONE" for s in ("corpus", "tokenizer", *TRAINING)}, states
