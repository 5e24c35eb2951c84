"""Pretraining: a Llama-family model from a preset (or a local HF checkpoint for continued pretraining),
next-token prediction on packed token shards (the tokenizer stage's, or a weighted mixture of folders).
Options: document attention (kamado/train/attention.py), Liger kernels and torch.compile (kamado/train/kernels.py)."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from kamado.train.attention import attention_implementation
from kamado.train.data import PretrainTask
from kamado.train.dsconfig import deepspeed_config
from kamado.train.kernels import apply_liger, check_liger, compile_model
from kamado.train.model import build_model, llama_config, load_model, resize_embeddings, resolve_shape
from kamado.train.worker import worker_main


def build(ws, cfg, tokenizer, device):
    info: dict = {}
    if cfg.liger_kernels:
        check_liger(device)  # before minutes of model building
    attention = attention_implementation(device, cfg.precision, cfg.document_attention)
    if cfg.model.init_from:
        model = load_model(cfg.model.init_from)
        info["init_from"] = cfg.model.init_from
        info["embedding_rows_added"] = resize_embeddings(model, len(tokenizer))
        max_pos = model.config.max_position_embeddings
    else:
        shape = resolve_shape(cfg.model)
        max_pos = shape.max_position_embeddings
        config = llama_config(shape, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        zero3 = deepspeed_config(cfg, dist.get_world_size()) if cfg.zero_stage == 3 else None
        model = build_model(config, zero3)
        info["model_shape"] = vars(shape)
    if cfg.seq_len > max_pos:
        raise ValueError(f"pretrain.seq_len {cfg.seq_len} exceeds the model's max_position_embeddings {max_pos}")
    model.set_attn_implementation(attention)
    info["attention"] = attention + (" (document)" if cfg.document_attention else "")
    model = model.to(device)
    if cfg.liger_kernels:
        apply_liger(model, device)
        info["liger_kernels"] = True
    if cfg.compile:
        compile_model(model)
        info["compile"] = True
    sources = [(s.path, s.weight) for s in cfg.data] or [(ws.stage_dir("tokenizer") / "tokens", 1.0)]
    documents = (tokenizer.eos_token_id, attention) if cfg.document_attention else None
    task = PretrainTask([(Path(p), w) for p, w in sources], cfg.seq_len, cfg.seed, document_attention=documents,
                        fused_loss=cfg.liger_kernels)
    info["train_samples"] = task.num_samples
    return model, task, info


main = worker_main("pretrain", build)

if __name__ == "__main__":
    raise SystemExit(main())
