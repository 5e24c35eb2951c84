"""Pretraining: a Llama-family model from a preset (or a local HF checkpoint for continued pretraining),
next-token prediction on packed token shards (the tokenizer stage's, or a weighted mixture of folders)."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from kamado.train.data import PretrainTask
from kamado.train.dsconfig import deepspeed_config
from kamado.train.model import build_model, llama_config, load_model, resize_embeddings, resolve_shape
from kamado.train.worker import worker_main


def build(ws, cfg, tokenizer, device):
    info: dict = {}
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
    model = model.to(device)
    sources = [(s.path, s.weight) for s in cfg.data] or [(ws.stage_dir("tokenizer") / "tokens", 1.0)]
    task = PretrainTask([(Path(p), w) for p, w in sources], cfg.seq_len, cfg.seed)
    info["train_samples"] = task.num_samples
    return model, task, info


main = worker_main("pretrain", build)

if __name__ == "__main__":
    raise SystemExit(main())
