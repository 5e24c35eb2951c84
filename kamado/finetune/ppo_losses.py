"""PPO/GRPO math (pure functions on tensors, tested in tests/finetune/test_losses.py) and the two reductions
over ranks the trainer needs. Every collective here reduces a tensor on the rank's device: NCCL rejects CPU
tensors, so a tensor made without `device=` works under gloo and fails on GPUs
(tests/finetune/test_ppo_collectives.py)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over response tokens (right-padded; mask 1 on real tokens). The value
    after the last token is 0 (the episode ends). Returns (advantages, returns)."""
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_v = values[:, t + 1] * mask[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def clipped_policy_loss(logp, old_logp, adv, mask, clip: float) -> torch.Tensor:
    ratio = torch.exp(logp - old_logp)
    return masked_mean(torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)), mask)


def clipped_value_loss(v, old_v, returns, mask, clip: float) -> torch.Tensor:
    v_clipped = old_v + (v - old_v).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((v - returns) ** 2, (v_clipped - returns) ** 2), mask)


def k3_kl(logp, ref_logp) -> torch.Tensor:
    """Schulman's unbiased, non-negative KL(π‖π_ref) estimate per token (GRPO's KL term)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def group_advantages(scores: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    g = scores.view(-1, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).view(-1)


class AdaptiveKL:
    """Ziegler et al. 2019: move the coefficient so the observed KL tracks the target."""

    def __init__(self, coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n: int) -> None:
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.value *= 1 + error * n / self.horizon


def minibatch_slices(n: int, k: int) -> list[slice]:
    """k contiguous, nearly equal slices of n rollouts (GRPO groups stay together when n is a multiple of k·group)."""
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def all_mean(values: list, world: int, device) -> list[float]:
    """The mean over ranks of a few floats or device scalars (step statistics): one all-reduce, one read."""
    x = torch.stack([torch.as_tensor(v, device=device).to(torch.float64).reshape(()) for v in values])
    if world > 1:
        dist.all_reduce(x)
    return (x / world).float().tolist()


def whiten_global(x: torch.Tensor, mask: torch.Tensor | None, world: int, shift_mean: bool = True) -> torch.Tensor:
    """Normalise over every rank's batch (masked entries excluded): rewards and advantages see one distribution."""
    m = torch.ones_like(x) if mask is None else mask
    stats = torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()]).double()
    if world > 1:
        dist.all_reduce(stats)
    mean = stats[0] / stats[2]
    var = (stats[1] / stats[2] - mean**2).clamp(min=0)
    out = (x - mean) / torch.sqrt(var + 1e-8) if shift_mean else (x - mean) / torch.sqrt(var + 1e-8) + mean
    return out.float() * m
