"""LoRA (peft) for SFT and DPO: adapters on the attention and MLP projections while training, merged into plain
weights at export, so `<stage>/hf` (what release reads) is an ordinary checkpoint with no peft dependency."""

from __future__ import annotations


def maybe_apply_lora(model, cfg) -> tuple[object, dict]:
    """Wrap `model` with LoRA adapters when `cfg.enabled`; only the adapters are trainable (the loop's optimizer
    takes the parameters with requires_grad)."""
    if not cfg.enabled:
        return model, {}
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                          bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, peft_cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return model, {"lora": {"r": cfg.r, "alpha": cfg.alpha, "trainable_parameters": trainable, "total_parameters": total}}


def is_peft(module) -> bool:
    return hasattr(module, "peft_config") and hasattr(module, "merge_and_unload")


def merged_from_state(peft_module, state: dict):
    """A fresh copy of `peft_module`'s architecture loaded with `state` (its full, consolidated state dict), adapters
    merged into the base weights: the plain transformers model to save."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_config(peft_module.get_base_model().config)
    fresh = get_peft_model(base, peft_module.peft_config["default"])
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if missing or unexpected:
        raise RuntimeError(f"LoRA export: consolidated state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return fresh.merge_and_unload()
