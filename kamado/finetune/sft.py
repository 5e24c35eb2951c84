"""Instruction SFT: loss on response tokens only."""

from __future__ import annotations

from kamado.finetune.data import Rejected, encode_example, format_prompt, is_held_back, pad_batch, read_records, write_rejections
from kamado.train.data import SampleOrder, causal_lm_loss
from kamado.train.model import load_model
from kamado.train.worker import worker_main


class SFTTask:
    name = "sft"

    def __init__(self, train_rows, val_rows, pad_id: int, seed: int):
        if not train_rows:
            raise ValueError("sft: no usable training records")
        self.train_rows, self.val_rows, self.pad_id = train_rows, val_rows, pad_id
        self.order = SampleOrder(len(train_rows), seed)

    def batch(self, indices: list[int]) -> dict:
        return pad_batch([self.train_rows[self.order(i)] for i in indices], self.pad_id)

    def val_batches(self, micro_batch: int, limit: int = 8):
        rows = self.val_rows[: limit * micro_batch]
        for start in range(0, len(rows), micro_batch):
            yield pad_batch(rows[start : start + micro_batch], self.pad_id)

    def loss(self, model, batch: dict):
        return causal_lm_loss(model, batch), {}


def load_sft_rows(paths: list[str], tokenizer, seq_len: int, val_fraction: float):
    rejected = Rejected()
    train, val = [], []
    for i, (_, _, rec) in enumerate(read_records(paths, ("instruction", "output"))):
        if not rec["output"].strip():
            rejected.add("empty_response")
            continue
        row = encode_example(tokenizer, format_prompt(rec["instruction"], rec.get("input") or ""), rec["output"], seq_len)
        if row is None:
            rejected.add("prompt_longer_than_seq_len")
            continue
        (val if is_held_back(i, val_fraction) else train).append(row)
    return train, val, rejected


def build(ws, cfg, tokenizer, device):
    train, val, rejected = load_sft_rows(cfg.data, tokenizer, cfg.seq_len, cfg.validation_fraction)
    write_rejections(ws.stage_dir("sft") / "data_report.json", rejected, len(train) + len(val))
    model = load_model(ws.model_source("sft")).to(device)
    task = SFTTask(train, val, tokenizer.pad_token_id, cfg.seed)
    return model, task, {"train_records": len(train), "val_records": len(val), "rejected": rejected.counts}


main = worker_main("sft", build)

if __name__ == "__main__":
    raise SystemExit(main())
