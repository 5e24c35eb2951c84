"""Token shards are checked against tokens/index.json (sizes and digests written by encode.py) before training:
a truncated, appended, overwritten or missing shard is an error naming the shard."""

import json

import numpy as np
import pytest

from kamado.tokenizer.encode import open_shards
from kamado.tokenizer.shard_check import TokenShardMismatch, shard_digest, verify_shards
from kamado.train.data import PackedTokens
from tests.reliability.harness import make_tokens


@pytest.fixture
def tokens(tmp_path):
    return make_tokens(tmp_path / "tokens")


def test_intact_shards_open(tokens):
    assert sum(len(a) for a in open_shards(tokens, "train")) > 10_000
    assert len(PackedTokens(tokens, "train", 32)) > 100


@pytest.mark.parametrize("damage", ["truncate", "append", "overwrite", "delete"])
def test_a_changed_shard_is_a_clear_error_naming_it(tokens, damage):
    shard = tokens / "train-00000.bin"
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(data[: len(data) - 2])
    elif damage == "append":
        shard.write_bytes(data + b"\x01\x00")
    elif damage == "overwrite":  # same size, other content
        data[len(data) // 2 : len(data) // 2 + 4] = b"\x07\x00\x07\x00"
        shard.write_bytes(data)
    else:
        shard.unlink()
    with pytest.raises(TokenShardMismatch, match="train-00000.bin"):
        PackedTokens(tokens, "train", 32)  # what pretraining builds before its first step
    verify_shards(tokens, json.loads((tokens / "index.json").read_text()), "val")  # the other split is fine


def test_large_shards_are_hashed_by_samples_that_cover_both_ends(tmp_path, monkeypatch):
    import kamado.tokenizer.shard_check as sc

    monkeypatch.setattr(sc, "FULL_HASH_BYTES", 4096)  # a small file stands in for a multi-GB shard
    monkeypatch.setattr(sc, "SAMPLE_BYTES", 256)
    path = tmp_path / "big.bin"
    data = np.arange(20_000, dtype=np.uint16).tobytes()
    path.write_bytes(data)
    digest = shard_digest(path)
    assert digest.startswith("blake2b-sampled:")
    for offset in (0, len(data) - 1):  # the first and the last block are always sampled
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        path.write_bytes(changed)
        assert shard_digest(path) != digest


def test_an_index_without_digests_still_checks_sizes(tokens):
    index = json.loads((tokens / "index.json").read_text())
    for entry in index["shards"]:
        del entry["bytes"], entry["digest"]
    (tokens / "index.json").write_text(json.dumps(index))
    shard = tokens / "train-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(TokenShardMismatch, match="bytes, index.json says"):
        open_shards(tokens, "train")
