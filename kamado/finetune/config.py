"""The fine-tuning stages' configs: SFT, reward model, DPO, PPO/GRPO (and LoRA)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from kamado.config import Choice, ConfigError, at_least, extendable, path_field
from kamado.train.config import TrainConfig

LossType = Choice("LossType", "sigmoid ipo")
Reference = Choice("Reference", "precomputed live")
Algorithm = Choice("Algorithm", "ppo grpo")
RewardSource = Choice("RewardSource", "rule model")
ValueFrom = Choice("ValueFrom", "auto policy reward")


def jsonl_files() -> list[str]:
    """The `data` field of a fine-tuning stage: JSONL files, relative to the recipe file."""
    return path_field(factory=list)


def check_data_files(self, key: str, workdir: str, stages: list[str]) -> None:  # noqa: ARG001
    """A fine-tuning stage's `check_inputs`: its data files are given, exist and hold a record."""
    from kamado.corpus.readers import open_text

    if not self.data:
        raise ConfigError(f"{key}.data", "no data files given")
    for j, f in enumerate(self.data):
        if not os.path.isfile(f):
            raise ConfigError(f"{key}.data[{j}]", f"file not found: {f}")
        with open_text(f) as fh:
            if not any(line.strip() for line in fh):
                raise ConfigError(f"{key}.data[{j}]", f"empty file: {f}")


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
    data: list[str] = jsonl_files()
    lr: float = 1e-3
    max_steps: int = extendable(40)
    warmup_steps: int = 4
    seq_len: int = 256
    validation_fraction: float = 0.1
    packing: bool = False  # several examples per row of seq_len tokens (attention stays within each example)
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    check_inputs = check_data_files


@dataclass
class RewardConfig(TrainConfig):
    """Reward model: the policy LM with a scalar head, pairwise Bradley–Terry loss on prompt/chosen/rejected."""

    data: list[str] = jsonl_files()  # JSONL files: prompt/chosen/rejected records
    validation_fraction: float = 0.2  # pairs held back for the accuracy in reward/accuracy.json
    lr: float = 1e-3
    max_steps: int = extendable(40)
    warmup_steps: int = 4
    seq_len: int = 256
    micro_batch_size: int = 4

    check_inputs = check_data_files


@dataclass
class DPOConfig(TrainConfig):
    data: list[str] = jsonl_files()  # JSONL files: prompt/chosen/rejected records
    beta: float = 0.1
    loss_type: LossType = LossType.sigmoid  # sigmoid (DPO) | ipo (Azar et al. 2023, on per-token mean log-probs)
    label_smoothing: float = 0.0  # sigmoid only: conservative DPO, the assumed rate of flipped preference labels
    # precomputed: reference log-probs from one pass before training (no second model in memory);
    # live: a frozen copy of the starting model runs beside the policy each step (a ZeRO-3 inference engine under ZeRO-3)
    reference: Reference = Reference.precomputed
    lr: float = 5e-4
    max_steps: int = extendable(20)
    warmup_steps: int = 2
    seq_len: int = 256
    micro_batch_size: int = 2
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    check_inputs = check_data_files

    def validate(self, key: str) -> None:
        super().validate(key)
        if not self.beta > 0:  # the preference margin's scale: 0 or less learns nothing or the reverse preference
            raise ConfigError(f"{key}.beta", f"must be more than 0, not {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"{key}.label_smoothing", f"must be in [0, 0.5), not {self.label_smoothing}")


@dataclass
class PPOConfig(TrainConfig):
    """RLHF on rollouts: PPO (policy, value model, frozen reference, reward) or GRPO (group-relative, no value model).

    micro_batch_size is prompts per rank per step; GRPO samples `group_size` responses for each."""

    data: list[str] = jsonl_files()  # JSONL files: `prompt` (or `instruction`) per record
    algorithm: Algorithm = Algorithm.ppo  # ppo | grpo
    reward: RewardSource = RewardSource.rule  # rule (reward_suffix) | model (the reward stage's model; needs it in `stages`)
    reward_suffix: str = "です。"  # rule: a response that ends in this scores 1, else 0
    stop_text: str = "。"  # a response ends at the first token holding this (or at EOS); "" = EOS only
    max_new_tokens: int = 24
    temperature: float = 1.0
    group_size: int = 4  # grpo
    ppo_epochs: int = 2  # optimisation passes over each batch of rollouts
    minibatches: int = 1  # each pass splits the rollout batch into this many optimizer steps (DeepSpeed-Chat, OpenRLHF)
    value_from: ValueFrom = ValueFrom.auto  # value model's start: policy | reward (the reward stage's model) | auto: reward if staged
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

    check_inputs = check_data_files

    def validate(self, key: str) -> None:
        super().validate(key)
        at_least(key, self, ("minibatches", "ppo_epochs"))
        if self.algorithm == "grpo" and self.group_size < 2:
            raise ConfigError(f"{key}.group_size", "GRPO needs at least 2 samples per prompt")
