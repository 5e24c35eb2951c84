"""Sharded encoding: corpus shards → packed token shards in a process pool, one marker per shard, an index."""

from __future__ import annotations

import gzip
import json

import numpy as np
import sentencepiece as spm

from kamado.tokenizer.encode import encode_corpus, is_validation, open_shards, token_dtype
from tests.tokenizer.conftest import sample_docs


def write_shards(folder, n):
    texts = [t for _, t in sample_docs()]
    paths = []
    for i in range(n):
        p = folder / f"shard-{i:05d}.jsonl.gz"
        with gzip.open(p, "wt", encoding="utf-8") as fh:
            for j, t in enumerate(texts[i::n]):
                fh.write(json.dumps({"id": f"d{i}-{j}", "text": t, "meta": {}}, ensure_ascii=False) + "\n")
        paths.append(p)
    return paths


def test_encode_corpus_in_a_pool_round_trips_every_document(small_model, tmp_path):
    shards = write_shards(tmp_path, 3)
    tokens = tmp_path / "tokens"
    index = encode_corpus(small_model, shards, tokens, validation_fraction=0.2, workers=2)
    sp = spm.SentencePieceProcessor(model_file=str(small_model))
    assert index["dtype"] == "uint16" and index["eos_id"] == 2 and len(index["shards"]) == 6
    for i, path in enumerate(shards):
        docs = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
        for split in ("train", "val"):
            want = [d["text"] for d in docs if is_validation(d["id"], 0.2) == (split == "val")]
            arr = np.fromfile(tokens / f"{split}-{i:05d}.bin", dtype=np.uint16)
            pieces = np.split(arr, np.flatnonzero(arr == 2) + 1)[:-1] if len(arr) else []
            assert [sp.decode(p[:-1].tolist()) for p in pieces] == want  # EOS after every document, nothing lost
    assert sum(len(a) for a in open_shards(tokens, "train")) == sum(s["tokens"] for s in index["shards"] if s["split"] == "train")
    assert any(s["docs"] for s in index["shards"] if s["split"] == "val")


def test_a_rerun_encodes_only_missing_shards(small_model, tmp_path):
    shards = write_shards(tmp_path, 2)
    tokens = tmp_path / "tokens"
    encode_corpus(small_model, shards, tokens, 0.1, workers=1)
    kept = (tokens / "train-00000.bin").stat().st_mtime_ns
    (tokens / "shard-00001.json").unlink()  # as if shard 1's task had been cut short
    (tokens / "train-00001.bin").write_bytes(b"")
    index = encode_corpus(small_model, shards, tokens, 0.1, workers=1)
    assert (tokens / "train-00000.bin").stat().st_mtime_ns == kept
    assert (tokens / "train-00001.bin").stat().st_size == 2 * next(s["tokens"] for s in index["shards"] if s["file"] == "train-00001.bin") > 0


def test_token_dtype_widens_past_uint16():
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32


def test_line_by_line_encoding_is_the_same_segmentation(small_model):
    from kamado.tokenizer.encode import encode_lines

    sp = spm.SentencePieceProcessor(model_file=str(small_model))
    texts = [t for _, t in sample_docs()] + ["", "\n", "前\n\n後\n", "末尾の改行\n"]
    assert encode_lines(sp, texts) == [sp.encode(t) for t in texts]
