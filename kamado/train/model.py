"""Llama-family models from transformers: named presets or explicit shapes, or a local HF checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kamado.train.config import ModelConfig


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_position_embeddings: int


# Shapes on the Llama / llm-jp pattern; "tiny" is for CPU tests and the demo.
PRESETS: dict[str, Shape] = {
    "tiny": Shape(64, 176, 2, 4, 2, 512),
    "160m": Shape(768, 2048, 12, 12, 12, 2048),
    "1b": Shape(2048, 5632, 22, 16, 8, 4096),
    "7b": Shape(4096, 11008, 32, 32, 32, 4096),
    "13b": Shape(5120, 13824, 40, 40, 40, 4096),
}


def resolve_shape(cfg: ModelConfig) -> Shape:
    if cfg.preset not in PRESETS:
        raise ValueError(f"pretrain.model.preset: unknown preset {cfg.preset!r} (known: {', '.join(PRESETS)})")
    base = PRESETS[cfg.preset]
    return Shape(**{k: (getattr(cfg, k) if getattr(cfg, k) is not None else getattr(base, k)) for k in base.__dataclass_fields__})


def llama_config(shape: Shape, vocab_size: int, bos_id: int, eos_id: int, pad_id: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_position_embeddings,
        rms_norm_eps=1e-5,
        rope_theta=10_000.0,
        tie_word_embeddings=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def build_model(config, zero3_config: dict | None = None):
    """A fresh model; under ZeRO-3 it is built partitioned (deepspeed.zero.Init) so no rank holds it whole."""
    from transformers import LlamaForCausalLM

    if zero3_config is None:
        return LlamaForCausalLM(config).float()
    # transformers builds under deepspeed.zero.Init itself (and gathers partitions where its weight init needs
    # them, e.g. zeroing the padding row) while an HfDeepSpeedConfig for ZeRO-3 is alive.
    from transformers.integrations import HfDeepSpeedConfig

    keep_alive = HfDeepSpeedConfig(zero3_config)  # noqa: F841 - transformers holds a weak reference to it
    model = LlamaForCausalLM._from_config(config, dtype=torch.float32)
    model._kamado_ds_config = keep_alive
    return model


def resize_embeddings(model, vocab_size: int) -> int:
    """Grow the input and output embeddings to an extended tokenizer's size; new rows are the mean of the old
    ones (a neutral start that keeps the old ids' behaviour). Returns how many rows were added."""
    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size < old:
        raise ValueError(f"the tokenizer has {vocab_size} ids but the checkpoint {old}: an extended tokenizer must keep every old id")
    if vocab_size == old:
        return 0
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
            emb.weight[old:] = emb.weight[:old].mean(dim=0, keepdim=True)
    return vocab_size - old


def load_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)


def count_parameters(model) -> int:
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
