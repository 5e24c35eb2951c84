"""DPO variants, the sharded reference pass, reward and PPO/GRPO math: closed forms on fixed numbers."""

import math

import pytest
import torch

from kamado.finetune.dpo import dpo_loss, interleave_shards, reference_logps, reference_logps_shard
from kamado.finetune.ppo_losses import AdaptiveKL, clipped_policy_loss, clipped_value_loss, gae, group_advantages, k3_kl
from kamado.finetune.ppo_rollout import SuffixReward, prompt_ids, stop_token_ids
from kamado.finetune.reward import bradley_terry_loss

POL_C, POL_R = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
REF_C, REF_R = torch.tensor([-11.0, -4.5]), torch.tensor([-11.0, -3.5])
H = [(-10 + 11) - (-12 + 11), (-4 + 4.5) - (-3 + 3.5)]  # policy-minus-reference log-ratio margins: 2.0, 0.0


def _logsig(x):
    return -math.log1p(math.exp(-x))


def test_dpo_label_smoothing_closed_form():
    beta, eps = 0.5, 0.1
    loss, _, _ = dpo_loss(POL_C, POL_R, REF_C, REF_R, beta, "sigmoid", eps)
    expected = sum(-(1 - eps) * _logsig(beta * h) - eps * _logsig(-beta * h) for h in H) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    plain, _, _ = dpo_loss(POL_C, POL_R, REF_C, REF_R, beta)
    assert plain.item() == pytest.approx(sum(-_logsig(beta * h) for h in H) / 2, rel=1e-6) and plain < loss


def test_ipo_closed_form():
    beta = 0.25
    loss, rc, rr = dpo_loss(POL_C, POL_R, REF_C, REF_R, beta, "ipo")
    assert loss.item() == pytest.approx(sum((h - 1 / (2 * beta)) ** 2 for h in H) / 2, rel=1e-6)  # (2-2)², (0-2)² → 2.0
    assert loss.item() == pytest.approx(2.0)
    assert rc.tolist() == pytest.approx([0.25, 0.125])
    with pytest.raises(ValueError, match="unknown loss"):
        dpo_loss(POL_C, POL_R, REF_C, REF_R, beta, "hinge")


def test_reference_pass_sharded_across_ranks_equals_one_pass(tokenizer, tiny_model):
    from kamado.finetune.data import encode_conversation

    def row(p, a):
        return encode_conversation(tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": a}], 128)[:2]

    pairs = [(row(f"質問{i}ですか。", "はい、そうです。" * (1 + i % 3)), row(f"質問{i}ですか。", "いいえ。")) for i in range(7)]
    whole = reference_logps(tiny_model, pairs, tokenizer.pad_token_id, "cpu", batch_size=3)
    shards = [reference_logps_shard(tiny_model, pairs, tokenizer.pad_token_id, "cpu", r, 3, batch_size=2) for r in range(3)]
    assert [len(s) for s in shards] == [3, 2, 2]
    assert torch.allclose(interleave_shards(shards, len(pairs)), whole, atol=1e-4)
    assert (whole < 0).all()


def test_bradley_terry():
    rc, rr = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    assert bradley_terry_loss(rc, rr).item() == pytest.approx((-_logsig(2.0) - _logsig(-1.0)) / 2, rel=1e-6)


def test_gae_by_hand():
    r = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    v = torch.tensor([[0.5, 0.2, 0.1, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the 4th position is padding: ignored, value after the end is 0
    gamma, lam = 0.9, 0.8
    d2 = 1.0 - 0.1
    d1 = 0.0 + gamma * 0.1 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    a0 = d0 + gamma * lam * a1
    adv, ret = gae(r, v, mask, gamma, lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0], rel=1e-5)
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.1, 0.0], rel=1e-5)


def test_clipped_losses_and_kl():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    # ratio 1.5 with A>0 is clipped to 1.2; ratio 0.5 with A<0: max(0.5, 0.8) → 0.8
    assert clipped_policy_loss(logp, old, adv, mask, 0.2).item() == pytest.approx((-1.2 + 0.8) / 2, rel=1e-6)
    v, old_v, ret = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]])
    assert clipped_value_loss(v, old_v, ret, torch.ones(1, 1), 0.2).item() == pytest.approx(0.5 * (0.2 - 2.0) ** 2)
    lp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    assert k3_kl(lp, ref).item() == pytest.approx(math.exp(-0.5) + 0.5 - 1, rel=1e-6) and k3_kl(lp, lp).item() == 0


def test_group_advantages_and_adaptive_kl():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), 4)
    assert adv[:4].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], rel=1e-3) and adv[4:].abs().max() == 0
    kl = AdaptiveKL(0.1, target=6.0, horizon=100)
    kl.update(12.0, 10)  # twice the target: error clipped to +0.2
    assert kl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))


def test_rule_reward_and_stops(tokenizer):
    enc = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    reward = SuffixReward(tokenizer, "です。")
    responses = [enc("富士山です。") + [tokenizer.eos_token_id], enc("富士山だ。"), enc("富士山です")]
    assert reward([[1]] * 3, responses).tolist() == [1.0, 0.0, 0.0]
    stops = stop_token_ids(tokenizer, "。")
    assert tokenizer.eos_token_id in stops and enc("。")[-1] in stops and enc("富士山")[0] not in stops
    ids = prompt_ids(tokenizer, [{"role": "user", "content": "日本で一番高い山は？"}])
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template([{"role": "user", "content": "日本で一番高い山は？"}],
                                                                   tokenize=False, add_generation_prompt=True)
