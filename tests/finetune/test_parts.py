"""Pieces of DPO/PPO checked in one process on the real tokenizer and a tiny random Llama: the live reference, the
value model started from a reward model, PPO minibatches and its lr schedule; and the bad-input rules (rejected
with file:line, or truncated by the stated rule, and counted)."""

import json

import pytest
import torch

from kamado.finetune.data import BadRecord, encode_conversation, write_rejections
from kamado.finetune.dpo import DPOTask, load_pairs, reference_logps
from kamado.finetune.frozen import frozen_model
from kamado.finetune.ppo import ppo_lr_multiplier
from kamado.finetune.ppo_losses import minibatch_slices
from kamado.finetune.ppo_rollout import load_prompts, load_value_model
from kamado.finetune.config import PPOConfig
from kamado.train.config import TrainConfig
from kamado.train.schedule import lr_multiplier
from tests.helpers import write_jsonl


def _row(tokenizer, prompt, answer, max_len=128):
    return encode_conversation(tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], max_len)[:2]


def test_live_reference_equals_precomputed_in_one_process(tokenizer, tiny_model):
    import copy

    pairs = [(_row(tokenizer, f"質問{i}ですか。", "はい、そうです。" * (1 + i % 3)), _row(tokenizer, f"質問{i}ですか。", "いいえ。"))
             for i in range(6)]
    pad = tokenizer.pad_token_id
    pre = DPOTask(pairs, reference_logps(tiny_model, pairs, pad, "cpu"), pad, beta=0.1, seed=1)
    live = DPOTask(pairs, None, pad, beta=0.1, seed=1, ref_model=frozen_model(copy.deepcopy(tiny_model), TrainConfig(), 1, "cpu"))
    policy = copy.deepcopy(tiny_model)
    with torch.no_grad():  # a policy that has moved away from the reference, so the loss depends on the reference
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = pre.batch([0, 1, 2])
    with torch.no_grad():
        lp, parts_p = pre.loss(policy, batch)
        ll, parts_l = live.loss(policy, batch)
    assert abs(lp.item() - ll.item()) <= 1e-5 and abs(lp.item() - 0.6931) > 1e-3
    assert float(parts_l["ref_logp_chosen"]) == pytest.approx(float(parts_p["ref_logp_chosen"]), rel=1e-6)
    with pytest.raises(ValueError, match="exactly one of"):
        DPOTask(pairs, None, pad, 0.1, 1)


def test_value_model_from_the_reward_model_starts_at_its_score(tokenizer, tiny_model, tmp_path):
    from transformers import LlamaForSequenceClassification

    from kamado.finetune.reward import load_reward_model, score_batch, scores

    cfg = tiny_model.config.to_dict()
    cfg.update(num_labels=1, architectures=["LlamaForSequenceClassification"])
    torch.manual_seed(3)
    rm = LlamaForSequenceClassification(type(tiny_model.config).from_dict(cfg))
    rm.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    rows = [_row(tokenizer, "山は？", "富士山です。")[0], _row(tokenizer, "海は？", "太平洋です。とても広いです。")[0]]
    batch = score_batch(rows, tokenizer.pad_token_id)
    value = load_value_model(tmp_path / "rm", from_reward=True).eval()
    with torch.no_grad():
        expected = scores(load_reward_model(tmp_path / "rm").eval(), batch)
        per_token = value(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., 0]
    last = batch["attention_mask"].sum(1) - 1
    got = per_token[torch.arange(len(rows)), last]
    assert torch.allclose(got, expected, atol=1e-5) and expected.abs().min() > 1e-3
    assert value.score.bias is None and value.dropout.p == 0.0  # values are deterministic in train mode too
    assert load_value_model(tmp_path / "rm", from_reward=False).dropout.p == 0.0


def test_minibatches_and_the_lr_schedule_in_ppo_steps():
    assert minibatch_slices(8, 2) == [slice(0, 4), slice(4, 8)]
    cover = minibatch_slices(10, 3)
    assert [s.stop - s.start for s in cover] == [3, 4, 3] and cover[0].start == 0 and cover[-1].stop == 10
    assert all(a.stop == b.start for a, b in zip(cover, cover[1:]))
    cfg = PPOConfig(max_steps=10, warmup_steps=2, ppo_epochs=2, minibatches=3)
    per_step, per_update = lr_multiplier(cfg), ppo_lr_multiplier(cfg, 6)
    assert [per_update(u) for u in range(0, 60, 6)] == [per_step(s) for s in range(10)]
    assert per_update(5) == per_step(0) and per_update(6) == per_step(1) > per_step(0)  # warmup counts PPO steps


def test_dpo_bad_records_are_rejected_with_file_line_and_counted(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "好きな季節は？", "chosen": "春です。", "rejected": "ない。"},
        {"prompt": "好きな色は？", "chosen": "  ", "rejected": "赤。"},  # empty response
        {"prompt": "好きな花は？", "chosen": "桜です。", "rejected": " 桜です。"},  # chosen equals rejected
        {"prompt": "長い質問。" * 200, "chosen": "はい。", "rejected": "いいえ。"},  # no answer token fits
        {"prompt": "短い質問。", "chosen": "はい。" + "とても長い答え。" * 100, "rejected": "いいえ。"},  # truncated
        {"prompt": "同じ始まり。", "chosen": "あ" * 400 + "はい。", "rejected": "あ" * 400 + "いいえ。"},  # equal after the cut
    ])
    pairs, rejected, where = load_pairs([str(path)], tokenizer, 64, with_lines=True)
    assert [line for _, line in where] == [1, 5]
    assert rejected.counts == {"empty_response": 1, "chosen_equals_rejected": 1, "prompt_longer_than_seq_len": 1,
                               "chosen_equals_rejected_after_truncation": 1}
    assert rejected.truncated == 1 and rejected.where["truncated"] == [f"{path}:5"]
    assert rejected.where["chosen_equals_rejected"] == [f"{path}:3"]
    assert all(len(c[0]) <= 64 and len(r[0]) <= 64 for c, r in pairs)  # the rule: the first seq_len tokens are kept
    write_rejections(tmp_path / "report.json", rejected, len(pairs))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["used"] == 2 and report["where"]["empty_response"] == [f"{path}:2"]
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}])
    with pytest.raises(BadRecord, match=r"missing.jsonl:2: field 'rejected' missing"):
        load_pairs([str(missing)], tokenizer, 64)
    typed = write_jsonl(tmp_path / "typed.jsonl", [{"prompt": "a", "chosen": 1, "rejected": "c"}])
    with pytest.raises(BadRecord, match=r"typed.jsonl:1: field 'chosen' must be str, not int"):
        load_pairs([str(typed)], tokenizer, 64)
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{not json\n')
    with pytest.raises(BadRecord, match=r"broken.jsonl:2: not valid JSON"):
        load_pairs([str(tmp_path / "broken.jsonl")], tokenizer, 64)


def test_ppo_prompts_bad_records(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "日本の首都は？"}, {"prompt": "   "}, {"instruction": "要約して。", "input": "長い文。" * 100},
        {"messages": [{"role": "user", "content": "こんにちは。"}, {"role": "assistant", "content": "どうも。"}]},
    ])
    prompts, rejected = load_prompts([str(path)], tokenizer, max_prompt_len=64)
    assert len(prompts) == 2
    assert rejected.counts == {"empty_prompt": 1, "prompt_longer_than_limit": 1}
    assert rejected.where["prompt_longer_than_limit"] == [f"{path}:3"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a"}, {"question": "b"}])
    with pytest.raises(BadRecord, match=r"bad.jsonl:2: needs a 'prompt'"):
        load_prompts([str(bad)], tokenizer, 64)
