"""What every training stage shares (the DeepSpeed loop's knobs) and pretraining's own keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from kamado.config import extendable, layout, operational


@dataclass
class ModelConfig:
    preset: str = "tiny"  # see kamado.train.model.PRESETS
    hidden_size: Optional[int] = None
    intermediate_size: Optional[int] = None
    num_layers: Optional[int] = None
    num_heads: Optional[int] = None
    num_kv_heads: Optional[int] = None
    max_position_embeddings: Optional[int] = None
    # Continued pretraining: start from a local HF checkpoint instead of a preset (shape keys then ignored);
    # its embeddings are resized to the tokenizer, new rows initialised from the mean of the old ones.
    init_from: Optional[str] = None


@dataclass
class TokenSource:
    """One source of a pretraining mixture: a folder of packed token shards (tokens/index.json)."""

    path: str = MISSING
    weight: float = 1.0


@dataclass
class TrainConfig:
    """What every training stage (pretrain, sft, dpo) shares: the DeepSpeed loop's knobs."""

    nproc_per_node: int = layout(2)
    nodes: int = layout(1)
    zero_stage: int = 2
    precision: str = "fp32"  # fp32 | bf16 | fp16
    seq_len: int = 128
    micro_batch_size: int = 4
    grad_accum: int = layout(1)
    max_steps: int = extendable(100)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    checkpoint_every: int = operational(50)  # >= 1; a value >= max_steps saves only at the end
    keep_checkpoints: int = operational(2)  # >= 1: the newest complete checkpoint is what a resume needs
    log_every: int = operational(10)
    seed: int = 1234
    schedule: str = "cosine"  # cosine: warmup then cosine | wsd: warmup, stable, then linear decay
    decay_fraction: float = 0.1  # wsd: the last fraction of steps that decays to min_lr_ratio
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    activation_checkpointing: bool = False
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states in CPU memory (stage >= 1)
    offload_params: bool = False  # ZeRO-Infinity style parameter offload to CPU (stage 3 only)
    eval_every: int = operational(0)  # validation loss every K steps (0: only at the end)
    eval_batches: int = operational(8)
    max_nonfinite_in_a_row: int = 5  # non-finite losses skip the update; this many in a row stop the run
    spike_sigma: float = operational(4.0)  # a loss this many standard deviations above the recent mean is logged as a spike
    # Raw DeepSpeed keys merged into the generated config (e.g. {"zero_optimization": {"overlap_comm": true}});
    # a key the recipe already sets to another value is an error, so the recipe stays the one source of truth.
    deepspeed_extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainConfig(TrainConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    # Weighted mixture of token-shard folders; empty: the tokenizer stage's own shards.
    data: list[TokenSource] = field(default_factory=list)
    # Positions restart at each document (EOS-separated) and attention stays within it (kamado/train/attention.py).
    document_attention: bool = False
    liger_kernels: bool = False  # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy); CUDA only
    compile: bool = False  # torch.compile the model (kamado/train/kernels.py)
