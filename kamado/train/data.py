"""Token-shard samples for pretraining, and the deterministic, rank-aware order every task shares.

A batch is a pure function of (step, micro-step, rank): the loader's position is the step counter, so it is
saved in every checkpoint for free and a resumed run sees exactly the samples the straight run would have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kamado.tokenizer.encode import open_shards


class SampleOrder:
    """Global sample index → dataset index: a fresh seeded permutation per epoch."""

    def __init__(self, num_samples: int, seed: int):
        if num_samples <= 0:
            raise ValueError("no training samples")
        self.n = num_samples
        self.seed = seed
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def __call__(self, global_index: int) -> int:
        epoch, pos = divmod(global_index, self.n)
        if epoch != self._epoch:
            self._perm = np.random.default_rng(self.seed + epoch).permutation(self.n)
            self._epoch = epoch
        return int(self._perm[pos])  # type: ignore[index]


def batch_indices(step: int, micro: int, grad_accum: int, rank: int, world: int, micro_batch: int) -> list[int]:
    """Global sample indices of one rank's micro-batch: ranks take disjoint, interleaved slices."""
    start = ((step * grad_accum + micro) * world + rank) * micro_batch
    return list(range(start, start + micro_batch))


class PackedTokens:
    """Fixed-length windows of seq_len + 1 tokens over the packed shards of one split."""

    def __init__(self, tokens_dir: Path, split: str, seq_len: int):
        self.seq_len = seq_len
        self.shards = open_shards(tokens_dir, split)
        self.windows: list[tuple[int, int]] = []  # (shard, start)
        for s, arr in enumerate(self.shards):
            for start in range(0, len(arr) - seq_len - 1 + 1, seq_len):
                self.windows.append((s, start))
        if not self.windows:
            total = sum(len(a) for a in self.shards)
            raise ValueError(f"{tokens_dir}: {split} split has {total} tokens, fewer than one sample of seq_len+1={seq_len + 1}")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> np.ndarray:
        s, start = self.windows[i]
        return np.asarray(self.shards[s][start : start + self.seq_len + 1], dtype=np.int64)


class PretrainTask:
    """Next-token prediction on packed shards (documents separated by EOS)."""

    name = "pretrain"

    def __init__(self, tokens_dir: Path, seq_len: int, seed: int):
        self.train = PackedTokens(tokens_dir, "train", seq_len)
        try:
            self.val: PackedTokens | None = PackedTokens(tokens_dir, "val", seq_len)
        except ValueError:
            self.val = None
        self.order = SampleOrder(len(self.train), seed)

    def batch(self, indices: list[int]) -> dict:
        rows = np.stack([self.train[self.order(i)] for i in indices])
        t = torch.from_numpy(rows)
        return {"input_ids": t[:, :-1], "labels": t[:, 1:]}

    def val_batches(self, micro_batch: int, limit: int = 8):
        if self.val is None:
            return
        n = min(len(self.val), limit * micro_batch)
        for start in range(0, n, micro_batch):
            rows = np.stack([self.val[i] for i in range(start, min(start + micro_batch, n))])
            t = torch.from_numpy(rows)
            yield {"input_ids": t[:, :-1], "labels": t[:, 1:]}

    def loss(self, model, batch: dict):
        return causal_lm_loss(model, batch), {}


def causal_lm_loss(model, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over labelled positions; `labels` are already shifted (-100 = not scored)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch["labels"].reshape(-1), ignore_index=-100)
