"""The DeepSpeed config, generated from the recipe (one source of truth) plus documented raw extras."""

from __future__ import annotations

import copy
from typing import Any

from kamado.train.config import TrainConfig


class DeepSpeedConfigConflict(ValueError):
    pass


def deepspeed_config(cfg: TrainConfig, world_size: int, stage: str = "train") -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage in (1, 2):
        # DeepSpeed's default 5e8-element buckets cost 1.9 GB (fp32) per rank whatever the model size;
        # 5e7 (the Megatron-DeepSpeed setting) keeps communication batched at a tenth of the memory.
        zero.update(reduce_bucket_size=50_000_000, allgather_bucket_size=50_000_000)
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    generated: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.offload_optimizer:
        # We pass torch's AdamW (DeepSpeed's CPU Adam compiles a C++ op for minutes); allow it with offload.
        generated["zero_force_ds_cpu_optimizer"] = False
    return merge_extra(generated, cfg.deepspeed_extra, f"{stage}.deepspeed_extra")


def merge_extra(generated: dict, extra: dict, where: str, path: str = "") -> dict:
    """Deep-merge raw keys; setting a key the recipe generated to a different value is a conflict."""
    out = copy.deepcopy(generated)
    for key, value in extra.items():
        full = f"{path}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_extra(out[key], value, where, full + ".")
        elif key in out and out[key] != value:
            raise DeepSpeedConfigConflict(
                f"{where}: '{full}'={value!r} conflicts with {out[key]!r} set from the recipe; change the recipe key instead")
        else:
            out[key] = value
    return out
