"""The fine-tuning stages run for real (torchrun, DeepSpeed ZeRO-2, 2 CPU ranks) after the demo pipeline's pretrain:
SFT → reward model → DPO with LoRA (merged) → GRPO, then PPO, each asserting a real outcome."""

import json
import shutil

import numpy as np
import pytest
import torch

from kamado.local import run_stages

from kamado.stage import Workspace
from tests.helpers import EXAMPLES, tiny_recipe, write_jsonl

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TOPICS = ["読書", "運動", "睡眠", "料理", "音楽", "旅行", "勉強", "散歩", "掃除", "友達", "家族", "仕事", "映画", "天気", "植物"]


def rows(ws: Workspace, stage: str) -> list[dict]:
    return [json.loads(line) for line in (ws.stage_dir(stage) / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


TINY_RUN_OVERRIDES = ["pretrain.max_steps=40", "pretrain.checkpoint_every=20", "pretrain.log_every=10"]
TOY = [{"prompt": f"{t}についてどう思いますか。", "chosen": f"{t}はとても大切なものです。", "rejected": f"{t}はだめだ。"}
       for t in TOPICS for _ in range(4)]


@pytest.fixture(scope="module")
def chain(tiny_run, tmp_path_factory):
    """A copy of the demo run up to pretrain (same fingerprints), then: sft on a toy set whose answers end in
    「です。」 or 「だ。」 (half each: a policy that can do both, so RL has something to select), reward, dpo (LoRA)
    and ppo (GRPO, rule reward 「です。」)."""
    tmp = tmp_path_factory.mktemp("ft-chain")
    src = Workspace(tiny_run).root
    for stage in ("corpus", "tokenizer", "pretrain"):
        shutil.copytree(src / stage, tmp / "run" / stage, ignore=shutil.ignore_patterns("checkpoints"))
    pref = write_jsonl(tmp / "toy_pref.jsonl", TOY)
    sft = write_jsonl(tmp / "toy_sft.jsonl", [{"instruction": f"{t}についてどう思いますか。", "output": o}
                                              for t in TOPICS for o in (f"{t}はとても大切なものです。", f"{t}はだめだ。")])
    prompts = write_jsonl(tmp / "toy_prompts.jsonl", [{"prompt": f"{t}についてどう思いますか。"} for t in TOPICS])
    common = [*TINY_RUN_OVERRIDES, "stages=[corpus,tokenizer,pretrain,sft,reward,dpo,ppo]",
              f"sft.data=[{sft}]", "sft.max_steps=30", "sft.lr=3e-3", "sft.validation_fraction=0.0",
              f"reward.data=[{pref}]", "reward.max_steps=30", "reward.validation_fraction=0.25", "reward.log_every=10",
              "dpo.max_steps=10", "dpo.lora.enabled=true", "dpo.lora.r=4", "dpo.lr=5e-3",
              # rule reward: answers that end in 「です。」 score 1; a response ends at its first 「。」 or EOS
              f"ppo.data=[{prompts}]", "ppo.max_new_tokens=16", "ppo.max_steps=12", "ppo.lr=1e-3", "ppo.log_every=4"]
    grpo = tiny_recipe(tmp, *common, "ppo.algorithm=grpo", "ppo.micro_batch_size=2", "ppo.group_size=8")
    assert run_stages(grpo, ["sft", "reward", "dpo", "ppo"]) == {"sft": "done", "reward": "done", "dpo": "done", "ppo": "done"}
    ppo = tiny_recipe(tmp, *common, "ppo.algorithm=ppo", "ppo.micro_batch_size=8")
    return Workspace(grpo), ppo


def test_sft_loss_falls_on_the_toy_chat_set(chain):
    ws, _ = chain
    losses = [r["loss"] for r in rows(ws, "sft")]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5


def test_reward_model_separates_the_toy_preference(chain):
    ws, _ = chain
    acc = json.loads((ws.stage_dir("reward") / "accuracy.json").read_text())
    assert acc["val_pairs"] == 15 and acc["val_accuracy"] > 0.9
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(ws.stage_dir("reward") / "hf"), local_files_only=True)
    assert model.config.num_labels == 1
    assert ws.model_source("dpo") == ws.stage_dir("sft") / "hf"  # the reward model is never a policy source
    assert ws.model_source("ppo") == ws.stage_dir("dpo") / "hf"


def test_dpo_with_lora_is_merged_into_plain_weights(chain):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ws, _ = chain
    result = json.loads((ws.stage_dir("dpo") / "result.json").read_text())
    assert result["lora"]["trainable_parameters"] < result["lora"]["total_parameters"] / 5
    dpo = rows(ws, "dpo")
    assert dpo[0]["loss"] == pytest.approx(np.log(2), abs=1e-3)  # LoRA B starts at zero: policy == reference
    assert np.mean([r["logp_margin"] for r in dpo[-3:]]) > dpo[0]["logp_margin"]  # chosen margin rises
    hf = ws.stage_dir("dpo") / "hf"
    assert not any("lora" in k for k in load_file(hf / "model.safetensors"))
    merged = AutoModelForCausalLM.from_pretrained(str(hf), local_files_only=True).eval()
    sft = load_file(ws.stage_dir("sft") / "hf" / "model.safetensors")
    assert not torch.equal(merged.state_dict()["model.layers.0.self_attn.q_proj.weight"], sft["model.layers.0.self_attn.q_proj.weight"])
    from kamado.tokenizer.export import load_hf

    ref = torch.load(ws.stage_dir("dpo") / "reference_logits.pt")  # the training (peft) model's logits
    tok = load_hf(ws.tokenizer_dir())
    with torch.no_grad():
        for prompt, logits in zip(ref["prompts"], ref["logits"]):
            got = merged(input_ids=tok(prompt, return_tensors="pt")["input_ids"]).logits
            assert (got - logits).abs().max().item() < 1e-4


def _reward_rises(ws: Workspace):
    rewards = [r["reward"] for r in rows(ws, "ppo")]
    assert len(rewards) == 12
    assert np.mean(rewards[-4:]) > np.mean(rewards[:4]) + 0.15, rewards
    result = json.loads((ws.stage_dir("ppo") / "result.json").read_text())
    assert (ws.stage_dir("ppo") / "hf" / "model.safetensors").is_file() and result["steps"] == 12
    return result


def test_grpo_rule_reward_rises(chain):
    ws, _ = chain
    assert _reward_rises(ws)["algorithm"] == "grpo"


def test_ppo_rule_reward_rises(chain):
    _, ppo = chain
    assert run_stages(ppo, ["ppo"]) == {"ppo": "done"}
    ws = Workspace(ppo)
    assert _reward_rises(ws)["algorithm"] == "ppo"
    assert all(r["value_loss"] >= 0 for r in rows(ws, "ppo"))
    assert (ws.stage_dir("ppo") / "value_checkpoints" / "latest").is_file()
