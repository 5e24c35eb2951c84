"""Optional fused kernels behind recipe keys: Liger's Triton kernels and torch.compile.

- `pretrain.liger_kernels: true`: Liger's RMSNorm, RoPE, SwiGLU and fused linear cross-entropy (the output layer and
  the loss in chunks, so the (tokens × vocab) logits are never held whole). Triton kernels: CUDA only; on a rank
  without a GPU it is a clear error, not a silent fallback (a recipe that asks for them should not quietly run
  without them).
- `pretrain.compile: true`: `nn.Module.compile()` in place, so parameter names, state dicts and DeepSpeed's hooks see
  the same module (checkpoints of compiled and plain runs are interchangeable).
"""

from __future__ import annotations

import importlib.util

import torch


class KernelUnavailable(RuntimeError):
    """A recipe key asks for a kernel this machine cannot run."""


def check_liger(device: torch.device) -> None:
    """Before the model is built: fail fast with the reason."""
    if device.type != "cuda":
        raise KernelUnavailable(
            "pretrain.liger_kernels: Liger's kernels are Triton GPU kernels and this rank has no CUDA device "
            f"(device {device}); set pretrain.liger_kernels: false to train on CPU")
    if importlib.util.find_spec("liger_kernel") is None:
        raise KernelUnavailable("pretrain.liger_kernels: the liger-kernel package is not installed (pip install liger-kernel)")


def apply_liger(model, device: torch.device) -> None:
    """Patch a Llama model in place. The fused linear cross-entropy replaces the forward: it computes the loss
    itself when given `shift_labels` (our labels are already shifted) and then returns no logits."""
    check_liger(device)
    if getattr(model.config, "model_type", None) != "llama":
        raise KernelUnavailable(f"pretrain.liger_kernels: kamado applies Liger to Llama models only, not {model.config.model_type!r}")
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=True, model=model)


def fused_causal_lm_loss(model, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy from Liger's fused output layer + loss (same value as causal_lm_loss)."""
    return model(**inputs, shift_labels=labels).loss


def compile_model(model, backend: str = "inductor") -> None:
    """torch.compile in place (the first step pays the compilation: ~2 minutes for the tiny preset with Inductor
    on 2 busy CPU cores, C++ codegen; Triton kernels on GPU)."""
    if not hasattr(torch, "compile"):
        raise KernelUnavailable("pretrain.compile: this torch has no torch.compile")
    model.compile(backend=backend)
