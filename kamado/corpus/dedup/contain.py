"""Containment: a document wholly (or almost wholly) inside a larger one.

Jaccard MinHash cannot see it: a short story alone and the same story inside a collection ten times its size
have Jaccard ≈ 0.1. Containment |A ∩ B| / |A| can, and a fixed-rate sample of shingle hashes (FracMinHash, as in
sourmash) estimates it: keep every distinct shingle whose hash falls below 2^32 / scale. A document's sample is
then a subset of any document that contains it, so the fraction of A's samples found in B estimates the
containment, and the samples can be joined like band keys (sorted per shard, range units in the buckets phase).
Rule: a document with fewer than `min_samples` samples (about min_samples × scale characters) is not checked.
"""

from __future__ import annotations

import numpy as np


def frac_sample(hashes: np.ndarray, scale: int) -> np.ndarray:
    """Distinct 64-bit shingle hashes whose low 32 bits fall below 2^32 / scale (the high bits feed MinHash)."""
    keep = hashes[(hashes & np.uint64(0xFFFFFFFF)) < np.uint64((1 << 32) // scale)]
    return np.unique(keep)


def containment_edges(pairs: np.ndarray, shared: np.ndarray, n_a: np.ndarray, n_b: np.ndarray,
                      size_a: np.ndarray, size_b: np.ndarray, threshold: float, min_samples: int):
    """From co-occurrence counts of pairs (a, b): the edges (small, large, containment) where the smaller
    document (fewer shingles) has enough samples and at least `threshold` of them are in the larger one."""
    a_small = size_a < size_b
    small = np.where(a_small, pairs[:, 0], pairs[:, 1])
    large = np.where(a_small, pairs[:, 1], pairs[:, 0])
    n_small = np.where(a_small, n_a, n_b)
    frac = shared / np.maximum(n_small, 1)
    keep = (size_a != size_b) & (n_small >= min_samples) & (frac >= threshold)
    return small[keep], large[keep], frac[keep]
