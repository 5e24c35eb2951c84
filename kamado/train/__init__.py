"""Training: model presets, token-shard data, the DeepSpeed loop shared by pretrain and the finetune stages."""
