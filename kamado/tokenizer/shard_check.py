"""Token shards checked against `tokens/index.json` before anything trains on them.

`encode.py` records each shard's size in bytes and a digest when it writes it; `verify_shards` compares both with
the files on disk, so a shard cut short, replaced or overwritten after encoding is an error naming the shard, not
silently different training data.

The digest is BLAKE2b of the whole file up to FULL_HASH_BYTES; above that, of the size plus SAMPLES evenly spaced
blocks of SAMPLE_BYTES (the first and the last included). Sampling keeps the check at a few MB of reads per shard,
whatever its size, at the start of every training run (every rank); sizes are always exact. It catches truncation,
appends, a shard swapped for another and most overwrites; a change inside an unsampled region of a huge shard
needs `kamado` to be told (re-encode) — the tokenizer stage's fingerprint covers that.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FULL_HASH_BYTES = 64 * 2**20
SAMPLES = 16
SAMPLE_BYTES = 2**20


class TokenShardMismatch(ValueError):
    pass


def shard_digest(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: fh.read(SAMPLE_BYTES), b""):
                h.update(block)
            return "blake2b:" + h.hexdigest()
        h.update(size.to_bytes(8, "little"))
        last = size - SAMPLE_BYTES
        for i in range(SAMPLES):
            fh.seek(last * i // (SAMPLES - 1))
            h.update(fh.read(SAMPLE_BYTES))
    return "blake2b-sampled:" + h.hexdigest()


def verify_shards(tokens_dir: Path, index: dict, split: str | None = None) -> None:
    """Raise TokenShardMismatch naming the first shard (of `split`, or all) that differs from index.json."""
    itemsize = {"uint16": 2, "uint32": 4}.get(index.get("dtype", ""), 0)
    for entry in index["shards"]:
        if split is not None and entry["split"] != split:
            continue
        path = tokens_dir / entry["file"]
        where = f"{path} (listed in {tokens_dir / 'index.json'})"
        if not path.is_file():
            if entry.get("tokens", 0) == 0:
                continue  # an empty split of a shard may never have been read
            raise TokenShardMismatch(f"token shard {where} is missing")
        size = path.stat().st_size
        want = entry.get("bytes", entry.get("tokens", 0) * itemsize if itemsize else None)
        if want is not None and size != want:
            raise TokenShardMismatch(f"token shard {where} has {size} bytes, index.json says {want}: it was cut short "
                                     f"or changed after encoding; re-run the tokenizer stage")
        if "digest" in entry and shard_digest(path) != entry["digest"]:
            raise TokenShardMismatch(f"token shard {where}: its content does not match the checksum in index.json "
                                     f"({entry['digest']}); it changed after encoding; re-run the tokenizer stage")
