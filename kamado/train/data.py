"""Token-shard samples for pretraining, and the deterministic, rank-aware order every task shares.

A batch is a pure function of (step, micro-step, rank): the loader's position is the step counter, so it is
saved in every checkpoint for free and a resumed run sees exactly the samples the straight run would have.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kamado.tokenizer.encode import load_index, open_shards
from kamado.train.attention import document_batch, model_inputs


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


class Mixture:
    """Global sample index → (source, sample) for a weighted mixture, deterministically.

    Sources are drawn per index from a seeded categorical over blocks of BLOCK indices; each source walks its
    own epoch permutations in the order it is drawn, so every sample of a source is seen once per its epoch.
    The per-block counts are cached, so going forward is O(1) amortised and a resume recomputes them once.
    """

    BLOCK = 8192

    def __init__(self, sizes: list[int], weights: list[float], seed: int):
        w = np.asarray(weights, dtype=np.float64)
        self.p = w / w.sum()
        self.seed = seed
        self.orders = [SampleOrder(n, seed + 1009 * (s + 1)) for s, n in enumerate(sizes)]
        self._counts_before: list[np.ndarray] = [np.zeros(len(sizes), dtype=np.int64)]
        self._block = -1
        self._choice = self._within = None

    def _load_block(self, b: int) -> None:
        while len(self._counts_before) <= b:  # counts of each source drawn before block b
            k = len(self._counts_before) - 1
            choice = np.random.default_rng([self.seed, k]).choice(len(self.p), size=self.BLOCK, p=self.p)
            self._counts_before.append(self._counts_before[k] + np.bincount(choice, minlength=len(self.p)))
        choice = np.random.default_rng([self.seed, b]).choice(len(self.p), size=self.BLOCK, p=self.p)
        within = np.zeros(self.BLOCK, dtype=np.int64)
        for s in range(len(self.p)):
            mask = choice == s
            within[mask] = np.arange(mask.sum())
        self._block, self._choice, self._within = b, choice, within

    def __call__(self, global_index: int) -> tuple[int, int]:
        b, pos = divmod(global_index, self.BLOCK)
        if b != self._block:
            self._load_block(b)
        s = int(self._choice[pos])  # type: ignore[index]
        nth = int(self._counts_before[b][s] + self._within[pos])  # type: ignore[index]
        return s, self.orders[s](nth)


class Prefetcher:
    """Builds the next micro-batch on one background thread while the current step computes.

    A batch is a pure function of its sample indices, so a wrong guess costs only time: the next indices are
    guessed from the stride between the last two calls (constant in the loop: world × micro-batch), and a miss is
    built on the same single thread (the mixture's caches are never touched by two threads). With CUDA the tensors
    are pinned there, so the loop's host→device copy can be asynchronous.
    """

    def __init__(self, make: Callable[[list[int]], dict], pin: bool | None = None):
        self._make = make
        self._pin = torch.cuda.is_available() if pin is None else pin
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kamado-prefetch")
        self._pending: tuple[tuple[int, ...], Future] | None = None
        self._last_start: int | None = None
        self.hits = self.misses = 0

    def _build(self, indices: list[int]) -> dict:
        batch = self._make(indices)
        if self._pin:
            batch = {k: (v.pin_memory() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        return batch

    def __call__(self, indices: list[int]) -> dict:
        if self._pending is not None and self._pending[0] == tuple(indices):
            future, self.hits = self._pending[1], self.hits + 1
        else:
            future, self.misses = self._pool.submit(self._build, indices), self.misses + 1
        stride = indices[0] - self._last_start if self._last_start is not None and indices else 0
        self._last_start = indices[0] if indices else None
        guess = [i + stride for i in indices] if stride > 0 else None
        self._pending = (tuple(guess), self._pool.submit(self._build, guess)) if guess else None
        return future.result()


class PretrainTask:
    """Next-token prediction on packed shards (documents separated by EOS), one folder or a weighted mixture.

    `document_attention=(eos_id, implementation)`: positions restart at each document and attention stays within
    it (kamado/train/attention.py); None: plain causal attention over the whole window. `fused_loss`: the model
    computes the loss itself from the shifted labels (Liger's fused linear cross-entropy, kamado/train/kernels.py).
    """

    name = "pretrain"

    def __init__(self, sources: list[tuple[Path, float]], seq_len: int, seed: int,
                 document_attention: tuple[int, str] | None = None, fused_loss: bool = False, prefetch: bool = True):
        if document_attention is not None:
            for path, _ in sources:  # documents are split at the shards' own EOS id
                shard_eos = load_index(path).get("eos_id")
                if shard_eos != document_attention[0]:
                    raise ValueError(f"{path}/index.json: eos_id {shard_eos} is not the tokenizer's EOS id "
                                     f"{document_attention[0]}; document attention splits documents at EOS")
        self.sources = [PackedTokens(path, "train", seq_len) for path, _ in sources]
        self.val: PackedTokens | None = None
        for path, _ in sources:  # validation: the first source that holds a val split
            try:
                self.val = PackedTokens(path, "val", seq_len)
                break
            except ValueError:
                continue
        self.mixture = Mixture([len(s) for s in self.sources], [w for _, w in sources], seed)
        self.num_samples = sum(len(s) for s in self.sources)
        self.document_attention = document_attention
        self.fused_loss = fused_loss
        self._prefetch = Prefetcher(self._make_batch) if prefetch else None

    def _rows_to_batch(self, rows: np.ndarray) -> dict:
        t = torch.from_numpy(rows)
        if self.document_attention is None:
            return {"input_ids": t[:, :-1], "labels": t[:, 1:]}
        eos_id, implementation = self.document_attention
        return document_batch(t[:, :-1].contiguous(), t[:, 1:].contiguous(), eos_id, implementation)

    def _make_batch(self, indices: list[int]) -> dict:
        rows = []
        for i in indices:
            s, j = self.mixture(i)
            rows.append(self.sources[s][j])
        return self._rows_to_batch(np.stack(rows))

    def batch(self, indices: list[int]) -> dict:
        return self._prefetch(indices) if self._prefetch is not None else self._make_batch(indices)

    def val_batches(self, micro_batch: int, limit: int = 8):
        """The first `limit` micro-batches of the validation split; every rank runs the same ones (under
        ZeRO-3 a forward is collective, so ranks must agree on how many they run)."""
        if self.val is None:
            return
        n = min(len(self.val), limit * micro_batch)
        for start in range(0, n, micro_batch):
            yield self._rows_to_batch(np.stack([self.val[i] for i in range(start, min(start + micro_batch, n))]))

    def loss(self, model, batch: dict):
        if self.document_attention is not None:
            inputs = model_inputs(batch, self.document_attention[1])
        else:
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}
        if self.fused_loss:
            from kamado.train.kernels import fused_causal_lm_loss

            return fused_causal_lm_loss(model, inputs, batch["labels"]), {}
        return causal_lm_loss(model, batch, inputs), {}


def causal_lm_loss(model, batch: dict, inputs: dict | None = None) -> torch.Tensor:
    """Mean cross-entropy over labelled positions; `labels` are already shifted (-100 = not scored). `inputs`:
    the forward's keyword arguments when they are more than ids and a padding mask (document attention)."""
    if inputs is None:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}
    logits = model(**inputs).logits
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch["labels"].reshape(-1), ignore_index=-100)
