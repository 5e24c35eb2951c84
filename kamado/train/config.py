"""What every training stage shares (the DeepSpeed loop's knobs) and pretraining's own keys."""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from typing import Any, Optional


from kamado.config import REQUIRED, Choice, ConfigError, at_least, extendable, layout, operational, path_field

Precision = Choice("Precision", "fp32 bf16 fp16")
Schedule = Choice("Schedule", "cosine wsd")


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
    init_from: Optional[str] = path_field()


@dataclass
class TokenSource:
    """One source of a pretraining mixture: a folder of packed token shards (tokens/index.json)."""

    path: str = path_field(REQUIRED)
    weight: float = 1.0

    def input_paths(self, key: str) -> list[tuple[str, str]]:
        return [(f"{key}.path", os.path.join(self.path, "index.json"))]  # the folder's index names its shards

    def validate(self, key: str) -> None:
        if self.weight <= 0:
            raise ConfigError(f"{key}.weight", f"must be positive, not {self.weight}")


@dataclass
class TrainConfig:
    """What every training stage (pretrain, sft, dpo) shares: the DeepSpeed loop's knobs."""

    nproc_per_node: int = layout(2)
    nodes: int = layout(1)
    zero_stage: int = 2
    precision: Precision = Precision.fp32  # fp32 | bf16 | fp16
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
    # Write checkpoints in a background thread (kamado/train/async_checkpoint.py): training goes on once the state
    # is copied to host memory; a save counts (MANIFEST, `latest`) only once its files are written and fsynced.
    async_checkpoint: bool = operational(False)
    log_every: int = operational(10)
    seed: int = 1234
    schedule: Schedule = Schedule.cosine  # cosine: warmup then cosine | wsd: warmup, stable, then linear decay
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

    def validate(self, key: str) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"{key}.zero_stage", f"must be 0..3, not {self.zero_stage}")
        if self.offload_params and self.zero_stage != 3:
            raise ConfigError(f"{key}.offload_params", f"parameter offload needs zero_stage 3, not {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ConfigError(f"{key}.offload_optimizer", "optimizer offload needs zero_stage 1, 2 or 3")
        at_least(key, self, ("max_steps", "micro_batch_size", "seq_len", "nproc_per_node", "nodes", "grad_accum",
                             "log_every", "eval_batches"))
        at_least(key, self, ("checkpoint_every",), hint=" (to save only at the end, set it to max_steps or more)")
        # 0 would keep nothing to resume from (it used to keep everything)
        at_least(key, self, ("keep_checkpoints",), hint=" (the newest complete checkpoint is what a resume or a "
                                                        "raised max_steps continues from)")
        at_least(key, self, ("eval_every", "warmup_steps"), low=0)


@dataclass
class PretrainConfig(TrainConfig):
    model: ModelConfig = field(default_factory=ModelConfig)
    # Weighted mixture of token-shard folders; empty: the tokenizer stage's own shards.
    data: list[TokenSource] = field(default_factory=list)  # each path relative to the recipe file
    # Positions restart at each document (EOS-separated) and attention stays within it (kamado/train/attention.py).
    document_attention: bool = False
    liger_kernels: bool = False  # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy); CUDA only
    compile: bool = False  # torch.compile the model (kamado/train/kernels.py)

    def check_inputs(self, key: str, workdir: str, stages: list[str]) -> None:
        own_tokens = os.path.join(workdir, "tokenizer", "tokens")  # this run's tokenizer stage writes them
        for j, source in enumerate(self.data):
            made_here = "tokenizer" in stages and os.path.normpath(source.path) == os.path.normpath(own_tokens)
            if not made_here and not os.path.isfile(os.path.join(source.path, "index.json")):
                raise ConfigError(f"{key}.data[{j}].path", f"no token shards (index.json) in {source.path}")
        init = self.model.init_from
        if init and not os.path.isfile(os.path.join(init, "config.json")):
            raise ConfigError(f"{key}.model.init_from", f"no HF checkpoint (config.json) in {init}")
