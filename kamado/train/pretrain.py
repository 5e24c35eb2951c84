"""Pretraining: a Llama-family model from a preset, next-token prediction on the packed token shards."""

from __future__ import annotations

from kamado.train.data import PretrainTask
from kamado.train.model import build_model, llama_config, resolve_shape
from kamado.train.worker import worker_main


def build(ws, cfg, tokenizer, device):
    shape = resolve_shape(cfg.model)
    if cfg.seq_len > shape.max_position_embeddings:
        raise ValueError(f"pretrain.seq_len {cfg.seq_len} exceeds the model's max_position_embeddings {shape.max_position_embeddings}")
    config = llama_config(shape, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    model = build_model(config).to(device)
    task = PretrainTask(ws.stage_dir("tokenizer") / "tokens", cfg.seq_len, cfg.seed)
    return model, task, {"model_shape": vars(shape), "train_samples": len(task.train)}


main = worker_main("pretrain", build)

if __name__ == "__main__":
    raise SystemExit(main())
