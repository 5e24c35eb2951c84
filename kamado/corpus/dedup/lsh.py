"""LSH banding: band keys per document, key-range units for the buckets phase, pairs from equal keys.

A band of `rows` MinHash values becomes one 64-bit key. Documents sharing a key in any band are candidates.
The buckets phase never holds a whole band: each unit is (band, key range), and every signature shard keeps
its band keys sorted, so a unit reads just its slice of each shard (a binary search in a memory-mapped file).
Memory per unit is about 16 bytes × documents in the range, times 3 for the sort.
"""

from __future__ import annotations

import numpy as np

from kamado.corpus.dedup.minhash import mix64

_P = np.uint64(0x9E3779B97F4A7C15)
U64_SPAN = 1 << 64


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[bands, n] uint64 keys from [n, perms] signatures (only the first bands × rows values are used)."""
    n = sigs.shape[0]
    s = sigs[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    h = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            h ^= s[:, :, r]
            h *= _P
            h = mix64(h)
        h += np.arange(bands, dtype=np.uint64)[None, :] * _P  # equal values in different bands are different keys
    return np.ascontiguousarray(h.T)


def key_range(unit: int, num_ranges: int) -> tuple[np.uint64, np.uint64 | None]:
    """[lo, hi) of the 64-bit key space for range `unit` of `num_ranges`; hi None = to the end."""
    lo = unit * U64_SPAN // num_ranges
    hi = (unit + 1) * U64_SPAN // num_ranges
    return np.uint64(lo), (None if hi >= U64_SPAN else np.uint64(hi))


def slice_sorted(keys: np.ndarray, lo: np.uint64, hi: np.uint64 | None) -> slice:
    start = int(np.searchsorted(keys, lo, side="left"))
    stop = len(keys) if hi is None else int(np.searchsorted(keys, hi, side="left"))
    return slice(start, stop)


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where a run of equal keys (rows of a 2-D array, or values) begins."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=bool)
    diff = sorted_keys[1:] != sorted_keys[:-1]
    if diff.ndim == 2:
        diff = diff.any(axis=1)
    return np.concatenate([[True], diff])


def star_pairs(sorted_keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """[m, 2] pairs (first member of the bucket, other member) for every bucket with two or more members.

    A star instead of all pairs: a bucket of k documents costs k-1 pairs, not k(k-1)/2, and connects the same
    cluster. The price: a member whose pair with the first fails verification may still join through another
    band, where its bucket differs."""
    starts = group_starts(sorted_keys)
    first = np.maximum.accumulate(np.where(starts, np.arange(len(ids)), 0))
    member = ~starts
    return np.stack([ids[first[member]], ids[member]], axis=1) if member.any() else np.empty((0, 2), dtype=np.uint64)


def ordered(pairs: np.ndarray) -> np.ndarray:
    """Each pair as (smaller id, larger id): one pair, one row, whatever band found it."""
    return np.sort(pairs, axis=1) if len(pairs) else pairs.reshape(0, 2)


def unique_pairs(pairs: np.ndarray, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of [m, 2] uint64 pairs and, per row, the sum of `counts` (or the number of repeats)."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2).astype(np.uint64), np.zeros(0, dtype=np.int64)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    p = pairs[order]
    c = np.ones(len(p), dtype=np.int64) if counts is None else counts[order].astype(np.int64)
    starts = np.flatnonzero(group_starts(p))
    return p[starts], np.add.reduceat(c, starts)
