"""Frozen models that only run forward beside the trained one: DPO's live reference, PPO's reference policy and its
reward model.

Under ZeRO-3 the trained model's parameters are partitioned across ranks; a frozen model loaded whole on every rank
would cost a full copy per GPU, the memory ZeRO-3 was chosen to save. So, as DeepSpeed-Chat (`init_ref`,
`init_reward`) and TRL (`_prepare_deepspeed`) do, it is wrapped by `deepspeed.initialize` without an optimizer: a
ZeRO-3 inference engine whose partitioned parameters are gathered layer by layer in each forward. That gathering is
collective, so every rank must run the same number of forwards (the callers do: one per micro-batch).
Under ZeRO 0–2 the weights are whole on every rank anyway, and the frozen model is a plain module.
"""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def inference_ds_config(cfg, world_size: int) -> dict:
    """ZeRO-3 without an optimizer, batch keys and precision as the trained engine's (DeepSpeed checks them)."""
    zero: dict = {"stage": 3}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def frozen_model(model, cfg, world_size: int, device):
    """`model` in eval mode with no gradients, in the training precision: a ZeRO-3 inference engine when
    `cfg.zero_stage` is 3, else the module itself on `device`. Call it like the module."""
    model.eval().requires_grad_(False)
    if cfg.zero_stage != 3:
        return model.to(device=device, dtype=DTYPES[cfg.precision])
    import deepspeed

    engine = deepspeed.initialize(model=model.to(device), config=inference_ds_config(cfg, world_size))[0]
    engine.eval()
    return engine


def elements_held(model) -> int:
    """Parameter elements this rank holds of `model`: its partition under ZeRO-3 (ds_tensor), else everything."""
    module = getattr(model, "module", model)
    return sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in module.parameters())
