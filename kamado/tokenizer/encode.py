"""Packed token shards: every document's ids followed by EOS, concatenated into one flat array per shard.

`<split>-<i>.bin` holds raw little-endian ids (uint16 below 65,536 ids, else uint32); `index.json` lists the
shards with their dtype, token and document counts, size in bytes and digest (tokenizer/shard_check.py), so a
loader can memory-map them without reading them, and every training run checks them first.

Encoding is sharded like the corpus: `encode_shard` turns corpus shard i into train-i.bin and val-i.bin and ends
with its own done-marker `shard-i.json`, so the same function runs in a local process pool (`encode_corpus`) or
as one Slurm array task per shard, and a rerun encodes only the shards that have no marker.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from kamado.durable import fsync_dir, write_atomic
from kamado.tokenizer.shard_check import shard_digest, verify_shards

BATCH_DOCS = 512  # documents per SentencePiece batch call: amortises the Python → C++ crossing


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65_536 else np.dtype(np.uint32)


def is_validation(doc_id: str, fraction: float) -> bool:
    """Deterministic hold-out by id hash: the same documents are held back on every rerun and every shard."""
    h = int(hashlib.sha1(doc_id.encode("utf-8")).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


def write_token_shard(path: Path, docs: Iterable[list[int]], eos_id: int, dtype: np.dtype) -> tuple[int, int]:
    """Write one shard atomically; returns (tokens, documents)."""
    tmp = path.with_name(path.name + ".tmp")
    n_tokens = n_docs = 0
    with open(tmp, "wb") as fh:
        for ids in docs:
            arr = np.empty(len(ids) + 1, dtype=dtype)
            arr[:-1] = ids
            arr[-1] = eos_id
            fh.write(arr.tobytes())
            n_tokens += len(arr)
            n_docs += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return n_tokens, n_docs


def load_index(tokens_dir: Path) -> dict:
    return json.loads((tokens_dir / "index.json").read_text())


def open_shards(tokens_dir: Path, split: str) -> list[np.memmap]:
    """The shards of `split`, memory-mapped, after checking their sizes and digests against index.json."""
    index = load_index(tokens_dir)
    verify_shards(tokens_dir, index, split)
    dtype = np.dtype(index["dtype"])
    return [np.memmap(tokens_dir / s["file"], dtype=dtype, mode="r") for s in index["shards"] if s["split"] == split and s["tokens"] > 0]


# ------------------------------------------------------------------ sharded encoding
@lru_cache(maxsize=2)
def _processor(sp_model: str):
    """One SentencePiece processor per worker process (loaded once, reused for every shard it gets)."""
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=sp_model)


def _iter_docs(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None


def encode_lines(sp, texts: list[str]) -> list[list[int]]:
    """SentencePiece ids of each text, encoded line by line and joined with the newline's ids.

    The same segmentation as encoding the whole text (no piece spans a newline: "\n" is a piece of its own or a
    byte), but SentencePiece sums piece scores in float32 over the whole input, so on a long document rounding
    can tip a near-tie the other way than Hugging Face (which splits at "\n" first and sums in float64).
    Line by line, the shards hold what the exported HF tokenizer gives at inference time. One thread per process:
    parallelism comes from shards (processes, array tasks)."""
    newline = sp.encode("\n")
    lines: list[str] = []
    counts: list[int] = []
    for text in texts:
        parts = text.split("\n")
        lines += parts
        counts.append(len(parts))
    encoded = sp.encode(lines, num_threads=1)
    out, k = [], 0
    for n in counts:
        ids = list(encoded[k])
        for part in encoded[k + 1 : k + n]:
            ids += newline
            ids += part
        out.append(ids)
        k += n
    return out


def _encoded(sp, texts: Iterator[str]) -> Iterator[list[int]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == BATCH_DOCS:
            yield from encode_lines(sp, batch)
            batch = []
    if batch:
        yield from encode_lines(sp, batch)


def encode_shard(sp_model: str, corpus_shard: str, tokens_dir: str, shard: int, validation_fraction: float) -> dict:
    """Corpus shard → `train-<shard>.bin` + `val-<shard>.bin` + marker `shard-<shard>.json`; skipped if marked.

    Top-level and picklable: a process pool and a Slurm array task call it the same way."""
    out = Path(tokens_dir)
    marker = out / f"shard-{shard:05d}.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    sp = _processor(sp_model)
    dtype = token_dtype(sp.get_piece_size())
    eos = sp.eos_id()
    entries = []
    for split in ("train", "val"):
        want_val = split == "val"
        texts = (d["text"] for d in _iter_docs(Path(corpus_shard)) if is_validation(d["id"], validation_fraction) == want_val)
        name = f"{split}-{shard:05d}.bin"
        n_tok, n_docs = write_token_shard(out / name, _encoded(sp, texts), eos, dtype)
        entries.append({"file": name, "split": split, "tokens": n_tok, "docs": n_docs, "source": Path(corpus_shard).name,
                        "bytes": (out / name).stat().st_size, "digest": shard_digest(out / name)})
    result = {"shard": shard, "shards": entries}
    write_atomic(marker, json.dumps(result))
    return result


def write_index(tokens_dir: Path, num_shards: int, sp_model: str) -> dict:
    """Gather the per-shard markers into index.json (after every shard is done, locally or on Slurm)."""
    sp = _processor(sp_model)
    missing = [i for i in range(num_shards) if not (tokens_dir / f"shard-{i:05d}.json").is_file()]
    if missing:
        raise RuntimeError(f"{tokens_dir}: token shards {missing} are not encoded yet")
    index = {"dtype": token_dtype(sp.get_piece_size()).name, "eos_id": sp.eos_id(), "vocab_size": sp.get_piece_size(), "shards": []}
    for i in range(num_shards):
        index["shards"] += json.loads((tokens_dir / f"shard-{i:05d}.json").read_text())["shards"]
    write_atomic(tokens_dir / "index.json", json.dumps(index, indent=2))
    return index


def encode_corpus(sp_model: Path, corpus_shards: list[Path], tokens_dir: Path, validation_fraction: float,
                  workers: int = 2) -> dict:
    """Encode every corpus shard in a local process pool (one task per shard), then write index.json."""
    tokens_dir.mkdir(parents=True, exist_ok=True)
    args = [(str(sp_model), str(p), str(tokens_dir), i, validation_fraction) for i, p in enumerate(corpus_shards)]
    if workers <= 1 or len(args) <= 1:
        for a in args:
            encode_shard(*a)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(args))) as pool:
            list(pool.map(encode_shard, *zip(*args)))
    return write_index(tokens_dir, len(args), str(sp_model))
