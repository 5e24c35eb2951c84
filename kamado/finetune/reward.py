"""Reward model: the policy LM with a scalar head (transformers' LlamaForSequenceClassification, num_labels=1,
read at the last non-pad token: the EOS that closes the response), trained with the pairwise Bradley–Terry loss
-log σ(r_chosen - r_rejected) (Ouyang et al. 2022; DeepSpeed-Chat step 2, TRL RewardTrainer).

Pairs are held back for validation (every k-th); `reward/accuracy.json` gives the accuracy on them and on the
training pairs at the end. `reward/hf` is a sequence-classification checkpoint PPO loads as its judge."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from kamado.finetune.data import is_held_back, pad_batch, write_rejections
from kamado.finetune.dpo import load_pairs
from kamado.finetune.worker import finetune_main
from kamado.train.data import SampleOrder


def full_row(row: tuple[list[int], list[int]]) -> list[int]:
    """(inputs, shifted labels) → the whole sequence (the last target, EOS, appended back)."""
    inputs, labels = row
    return inputs + [labels[-1]]


def score_batch(rows: list[list[int]], pad_id: int) -> dict:
    batch = pad_batch([(r, r) for r in rows], pad_id)
    batch.pop("labels")
    return batch


def scores(model, batch: dict) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float().squeeze(-1)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def load_reward_model(path):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, local_files_only=True, dtype=torch.float32)
    if model.config.pad_token_id is None:
        raise ValueError(f"{path}: the model config has no pad_token_id; the scalar head needs it to find each row's last token")
    return model


class RewardTask:
    name = "reward"
    scalar_head = True  # finetune.worker exports it as its own class, with no LM reference logits

    def __init__(self, train_pairs, val_pairs, pad_id: int, seed: int, out_dir=None):
        if not train_pairs:
            raise ValueError("reward: no usable training pairs")
        self.train, self.val, self.pad_id, self.out_dir = train_pairs, val_pairs, pad_id, out_dir
        self.order = SampleOrder(len(train_pairs), seed)

    def _batch(self, pairs) -> dict:
        batch = score_batch([c for c, _ in pairs] + [r for _, r in pairs], self.pad_id)
        batch["n_pairs"] = torch.tensor(len(pairs))
        return batch

    def batch(self, indices: list[int]) -> dict:
        return self._batch([self.train[self.order(i)] for i in indices])

    def val_batches(self, micro_batch: int, limit: int = 8):
        pairs = self.val[: limit * micro_batch]
        for start in range(0, len(pairs), micro_batch):
            yield self._batch(pairs[start : start + micro_batch])

    def loss(self, model, batch: dict):
        r = scores(model, batch)
        n = r.shape[0] // 2  # chosen rows, then as many rejected ones (not int(n_pairs): a host read of a device tensor)
        rc, rr = r[:n], r[n:]
        return bradley_terry_loss(rc, rr), {"accuracy": (rc > rr).float().mean(), "margin": (rc - rr).detach().mean()}

    @torch.no_grad()
    def accuracy(self, model, pairs, device, micro_batch: int = 8) -> float | None:
        if not pairs:
            return None
        right = 0
        for start in range(0, len(pairs), micro_batch):
            batch = self._batch(pairs[start : start + micro_batch])
            n = int(batch["n_pairs"])
            r = scores(model, {k: v.to(device) for k, v in batch.items()})
            right += int((r[:n] > r[n:]).sum())
        return right / len(pairs)

    def final_report(self, loop) -> None:
        """Accuracy on held-back and training pairs (every rank runs the same forwards: collective under ZeRO-3)."""
        loop.engine.eval()
        report = {"val_pairs": len(self.val), "val_accuracy": self.accuracy(loop.engine, self.val, loop.device),
                  "train_pairs": len(self.train), "train_accuracy": self.accuracy(loop.engine, self.train, loop.device)}
        loop.engine.train()
        if loop.env.rank == 0:
            (loop.out_dir / "accuracy.json").write_text(json.dumps(report, indent=2))
            print(f"[reward] accuracy on {report['val_pairs']} held-back pairs: {report['val_accuracy']}", flush=True)


def split_pairs(pairs, fraction: float):
    train, val = [], []
    for i, p in enumerate(pairs):
        (val if is_held_back(i, fraction) else train).append(p)
    return train, val


def build(ws, cfg, tokenizer, device):
    pairs, rejected = load_pairs(cfg.data, tokenizer, cfg.seq_len)
    if not pairs:
        raise ValueError(f"reward: no usable preference pairs in {cfg.data} (rejected: {rejected.counts})")
    write_rejections(ws.stage_dir("reward") / "data_report.json", rejected, len(pairs))
    rows = [(full_row(c), full_row(r)) for c, r in pairs]
    train, val = split_pairs(rows, cfg.validation_fraction)
    model = load_reward_model(ws.model_source("reward")).to(device)
    task = RewardTask(train, val, tokenizer.pad_token_id, cfg.seed)
    return model, task, {"train_pairs": len(train), "val_pairs": len(val), "rejected": rejected.counts}


main = finetune_main("reward", build)

if __name__ == "__main__":
    raise SystemExit(main())
