"""Packed token shards: every document's ids followed by EOS, concatenated into one flat array per shard.

`<name>.bin` holds raw little-endian ids (uint16 below 65,536 ids, else uint32); `index.json` lists the
shards with their dtype, token and document counts so a loader can memory-map them without reading them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65_536 else np.dtype(np.uint32)


def write_token_shard(path: Path, docs: Iterable[list[int]], eos_id: int, dtype: np.dtype) -> tuple[int, int]:
    """Write one shard atomically; returns (tokens, documents)."""
    tmp = path.with_name(path.name + ".tmp")
    n_tokens = n_docs = 0
    with open(tmp, "wb") as fh:
        for ids in docs:
            arr = np.asarray(list(ids) + [eos_id], dtype=dtype)
            fh.write(arr.tobytes())
            n_tokens += len(arr)
            n_docs += 1
    os.replace(tmp, path)
    return n_tokens, n_docs


def load_index(tokens_dir: Path) -> dict:
    return json.loads((tokens_dir / "index.json").read_text())


def open_shards(tokens_dir: Path, split: str) -> list[np.memmap]:
    index = load_index(tokens_dir)
    dtype = np.dtype(index["dtype"])
    return [np.memmap(tokens_dir / s["file"], dtype=dtype, mode="r") for s in index["shards"] if s["split"] == split and s["tokens"] > 0]
