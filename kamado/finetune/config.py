"""The fine-tuning stages' configs: SFT, reward model, DPO, PPO/GRPO (and LoRA)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from kamado.config import extendable

from kamado.train.config import TrainConfig


@dataclass
class LoRAConfig:
    """LoRA adapters (peft) instead of full fine-tuning; merged into plain weights in `<stage>/hf`."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class SFTConfig(TrainConfig):
    # JSONL files: instruction/input/output records, or `messages` lists (system?, user, assistant, ...)
    data: list[str] = field(default_factory=list)
    lr: float = 1e-3
    max_steps: int = extendable(40)
    warmup_steps: int = 4
    seq_len: int = 256
    validation_fraction: float = 0.1
    packing: bool = False  # several examples per row of seq_len tokens (attention stays within each example)
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class RewardConfig(TrainConfig):
    """Reward model: the policy LM with a scalar head, pairwise Bradley–Terry loss on prompt/chosen/rejected."""

    data: list[str] = field(default_factory=list)  # JSONL files: prompt/chosen/rejected records
    validation_fraction: float = 0.2  # pairs held back for the accuracy in reward/accuracy.json
    lr: float = 1e-3
    max_steps: int = extendable(40)
    warmup_steps: int = 4
    seq_len: int = 256
    micro_batch_size: int = 4


@dataclass
class DPOConfig(TrainConfig):
    data: list[str] = field(default_factory=list)  # JSONL files: prompt/chosen/rejected records
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid (DPO) | ipo (Azar et al. 2023, on per-token mean log-probs)
    label_smoothing: float = 0.0  # sigmoid only: conservative DPO, the assumed rate of flipped preference labels
    # precomputed: reference log-probs from one pass before training (no second model in memory);
    # live: a frozen copy of the starting model runs beside the policy each step (a ZeRO-3 inference engine under ZeRO-3)
    reference: str = "precomputed"
    lr: float = 5e-4
    max_steps: int = extendable(20)
    warmup_steps: int = 2
    seq_len: int = 256
    micro_batch_size: int = 2
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class PPOConfig(TrainConfig):
    """RLHF on rollouts: PPO (policy, value model, frozen reference, reward) or GRPO (group-relative, no value model).

    micro_batch_size is prompts per rank per step; GRPO samples `group_size` responses for each."""

    data: list[str] = field(default_factory=list)  # JSONL files: `prompt` (or `instruction`) per record
    algorithm: str = "ppo"  # ppo | grpo
    reward: str = "rule"  # rule (reward_suffix) | model (the reward stage's model; needs it in `stages`)
    reward_suffix: str = "です。"  # rule: a response that ends in this scores 1, else 0
    stop_text: str = "。"  # a response ends at the first token holding this (or at EOS); "" = EOS only
    max_new_tokens: int = 24
    temperature: float = 1.0
    group_size: int = 4  # grpo
    ppo_epochs: int = 2  # optimisation passes over each batch of rollouts
    minibatches: int = 1  # each pass splits the rollout batch into this many optimizer steps (DeepSpeed-Chat, OpenRLHF)
    value_from: str = "auto"  # value model's start: policy | reward (the reward stage's model) | auto: reward if staged
    clip_range: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.5
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.05  # ppo: per-token KL penalty in the reward; grpo: KL term in the loss
    adaptive_kl: bool = False  # Ziegler et al. 2019 controller towards target_kl
    target_kl: float = 6.0
    kl_horizon: int = 10000
    whiten_rewards: bool = True  # scores normalised over the rollout batch (all ranks) before GAE
    value_lr: Optional[float] = None  # None: lr
    lr: float = 2e-4
    max_steps: int = extendable(30)
    warmup_steps: int = 0
    seq_len: int = 256
    micro_batch_size: int = 8
