"""Instruction SFT: instruction/input/output or `messages` records (multi-turn), loss on assistant tokens only,
optional packing, optional LoRA (merged into `sft/hf` at the end)."""

from __future__ import annotations

import torch

from kamado.finetune.data import (Rejected, encode_conversation, is_held_back, pack_rows, packed_batch, pad_batch,
                                  read_records, record_messages, write_rejections)
from kamado.finetune.lora import maybe_apply_lora
from kamado.finetune.worker import finetune_main
from kamado.train.data import SampleOrder, causal_lm_loss
from kamado.train.model import load_model


def sft_loss(model, batch: dict) -> torch.Tensor:
    if "packed" not in batch:
        return causal_lm_loss(model, batch)
    # Packed rows: no attention mask, position ids restart per example (block-diagonal attention); no KV cache,
    # else transformers skips the packed-sequence detection.
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch["labels"].reshape(-1), ignore_index=-100)


class SFTTask:
    name = "sft"

    def __init__(self, train_rows, val_rows, pad_id: int, seed: int, packing_seq_len: int | None = None):
        if not train_rows:
            raise ValueError("sft: no usable training records")
        self.pad_id = pad_id
        self.packed = packing_seq_len is not None
        if self.packed:  # a sample is a packed row of several examples
            train_rows, val_rows = pack_rows(train_rows, packing_seq_len), pack_rows(val_rows, packing_seq_len)
        self.train_rows, self.val_rows = train_rows, val_rows
        self.order = SampleOrder(len(train_rows), seed)

    def _collate(self, rows) -> dict:
        return packed_batch(rows, self.pad_id) if self.packed else pad_batch(rows, self.pad_id)

    def batch(self, indices: list[int]) -> dict:
        return self._collate([self.train_rows[self.order(i)] for i in indices])

    def val_batches(self, micro_batch: int, limit: int = 8):
        rows = self.val_rows[: limit * micro_batch]
        for start in range(0, len(rows), micro_batch):
            yield self._collate(rows[start : start + micro_batch])

    def loss(self, model, batch: dict):
        return sft_loss(model, batch), {}


def load_sft_rows(paths: list[str], tokenizer, seq_len: int, val_fraction: float):
    """Encoded (inputs, labels) rows split into train/validation, and the rejection counts. Conversations longer
    than seq_len are truncated (first seq_len+1 tokens kept; counted as `truncated`), or rejected when no
    assistant token is left."""
    rejected = Rejected()
    train, val = [], []
    for i, (path, line_no, rec) in enumerate(read_records(paths)):
        where = f"{path}:{line_no}"
        msgs = record_messages(rec, where)
        if any(m["role"] == "assistant" and not m["content"].strip() for m in msgs):
            rejected.add("empty_response", where)
            continue
        if not any(m["role"] == "assistant" for m in msgs):
            rejected.add("no_assistant_turn", where)
            continue
        enc = encode_conversation(tokenizer, msgs, seq_len)
        if enc is None:
            rejected.add("prompt_longer_than_seq_len", where)
            continue
        inputs, labels, truncated = enc
        if truncated:
            rejected.add_truncated(where)
        (val if is_held_back(i, val_fraction) else train).append((inputs, labels))
    return train, val, rejected


def build(ws, cfg, tokenizer, device):
    train, val, rejected = load_sft_rows(cfg.data, tokenizer, cfg.seq_len, cfg.validation_fraction)
    write_rejections(ws.stage_dir("sft") / "data_report.json", rejected, len(train) + len(val))
    model = load_model(ws.model_source("sft"))
    model, lora_info = maybe_apply_lora(model, cfg.lora)
    model = model.to(device)
    task = SFTTask(train, val, tokenizer.pad_token_id, cfg.seed, cfg.seq_len if cfg.packing else None)
    info = {"train_records": len(train), "val_records": len(val), "rejected": rejected.counts,
            "truncated": rejected.truncated, "train_samples": len(task.train_rows), **lora_info}
    return model, task, info


main = finetune_main("sft", build)

if __name__ == "__main__":
    raise SystemExit(main())
