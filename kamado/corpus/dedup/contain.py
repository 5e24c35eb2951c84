"""Containment: a document wholly (or almost wholly) inside a larger one.

Jaccard MinHash cannot see it: a short story alone and the same story inside a collection ten times its size
have Jaccard ≈ 0.1. Containment |A ∩ B| / |A| can, and a fixed-rate sample of shingle hashes (FracMinHash, as in
sourmash) estimates it: keep every distinct shingle whose hash falls below 2^32 / scale. A document's sample is
then a subset of any document that contains it, so the fraction of A's samples found in B estimates the
containment.

Candidates by prefix filtering (the set-similarity-join trick), so that no pair is counted piecewise:
if at least t·n of A's n samples are in B, then B holds at least one of any n - ceil(t·n) + 1 of A's samples.
Each document marks that many of its samples, plus one (HITS = 2: then B holds at least two of them), as *probes*
(the first in a fixed hash order). The buckets phase, key range by key range, pairs each probe with the other
documents holding the same sample; a pair is emitted once per shared probe (n - ceil(t·n) + 2 times at most, ~n/10
at t = 0.9), whatever the number of key ranges, with the count of its probes in that range. The verify phase sums
the counts, drops pairs with fewer than two shared probes (they cannot be contained), and counts |A ∩ B| exactly
from the two documents' whole samples (stored per document by the signatures phase) for the others. Partial co-occurrence counts summed over key ranges (the earlier design) wrote each pair once
per range it shared a sample in: their disk and the verify memory grew with the number of ranges, so with the corpus.

Rules:
- a document with fewer than `min_samples` samples (about min_samples × scale characters) is not checked as the
  contained one (it has no probes); it can still contain others.
- containment runs from the document with fewer shingles to the one with more; equal sizes are near/exact cases.
- a sample shared by more than `max_posting` documents is boilerplate: it makes no candidate and counts neither
  in the shared samples nor in the small document's total. A probe that is boilerplate is lost, so a document
  whose probes are all boilerplate is not checked (prefix filtering's guarantee holds for the other samples).
"""

from __future__ import annotations

import numpy as np

from kamado.corpus.dedup.lsh import group_starts
from kamado.corpus.dedup.minhash import mix64

_ORDER = np.uint64(0xD6E8FEB86659FD93)  # the probe order: a second hash of the sample, unrelated to key ranges


def frac_sample(hashes: np.ndarray, scale: int) -> np.ndarray:
    """Distinct 64-bit shingle hashes whose low 32 bits fall below 2^32 / scale (the high bits feed MinHash)."""
    keep = hashes[(hashes & np.uint64(0xFFFFFFFF)) < np.uint64((1 << 32) // scale)]
    return np.unique(keep)


# Probes per document: n - ceil(t·n) + HITS, so that a contained pair shares at least HITS of them. With HITS = 2
# verify counts exactly only the pairs found by two probes or more: a pair sharing a single probe is most often
# chance (in benchmarks/dedup_memory.py at 16x, 3 candidates in 4 shared just one), and one more probe per
# document costs the buckets phase far less than exact counting costs verify.
HITS = 2


def need(n: np.ndarray | int, threshold: float) -> np.ndarray:
    """ceil(t·n): the shared samples for containment ≥ t (round: 0.9 × 10 is 9.000000000000002 in floats)."""
    return np.ceil(np.round(threshold * np.asarray(n, dtype=np.float64), 9)).astype(np.int64)


def required_hits(n: np.ndarray, threshold: float) -> np.ndarray:
    """Shared probes a pair whose small document has n samples has at least, if contained: min(HITS, ceil(t·n))
    (the probes are capped at n)."""
    return np.minimum(HITS, need(n, threshold))


def probes(sample: np.ndarray, threshold: float, min_samples: int) -> np.ndarray:
    """Boolean mask over a document's sample: its min(n, n - ceil(t·n) + HITS) probes (none below `min_samples`)."""
    n = len(sample)
    mask = np.zeros(n, dtype=bool)
    if n < max(1, min_samples):
        return mask
    with np.errstate(over="ignore"):
        order = np.argsort(mix64(sample * _ORDER), kind="stable")
    mask[order[: n - int(need(n, threshold)) + HITS]] = True
    return mask


def probe_pairs(sorted_keys: np.ndarray, ids: np.ndarray, probe: np.ndarray, max_group: int):
    """In each group of 2..max_group equal keys, the pairs (probe entry's id, other id); also the keys of the
    larger groups (boilerplate, skipped), one per group."""
    starts = group_starts(sorted_keys)
    gid = np.cumsum(starts) - 1
    sizes = np.bincount(gid) if len(gid) else np.zeros(0, dtype=np.int64)
    big = sizes[gid] > max_group if len(gid) else np.zeros(0, dtype=bool)
    common = sorted_keys[starts & big]
    ids, gid, probe = ids[~big], gid[~big], probe[~big]
    out = [np.empty((0, 2), dtype=np.uint64)]
    for d in range(1, max_group):  # entries (i, i+d) inside one group, one whole-array step per distance
        if d >= len(ids):
            break
        same = gid[d:] == gid[:-d]
        if not same.any():
            break
        a, b = ids[:-d][same], ids[d:][same]
        pa, pb = probe[:-d][same], probe[d:][same]
        out += [np.stack([a[pa], b[pa]], axis=1), np.stack([b[pb], a[pb]], axis=1)]
    return np.concatenate(out), common


def shared_counts(pairs_idx: np.ndarray, rank: np.ndarray, offsets: np.ndarray, boiler: np.ndarray) -> np.ndarray:
    """|A ∩ B| without boilerplate samples for index pairs (a, b) into documents whose sorted samples are
    rank[offsets[i]:offsets[i + 1]] (each sample as its rank among the distinct samples: np.unique's inverse;
    boiler marks boilerplate samples). Vectorised: every sample of each pair's first document is looked up among
    the second's by one binary search over (document, rank) numbers."""
    counts = np.diff(offsets)
    a, b = pairs_idx[:, 0], pairs_idx[:, 1]
    n_q = counts[a]
    q_pair = np.repeat(np.arange(len(a)), n_q)
    if len(q_pair) == 0:
        return np.zeros(len(a), dtype=np.int64)
    q_pos = np.repeat(offsets[a] - np.concatenate([[0], np.cumsum(n_q)[:-1]]), n_q) + np.arange(len(q_pair))
    # (document, key) as one sortable int64: document × distinct keys + the key's rank. The table is sorted
    # already (documents in order, each one's samples sorted), so one searchsorted finds every query.
    span = np.int64(rank.max()) + 1
    table = np.repeat(np.arange(len(counts), dtype=np.int64), counts) * span + rank
    query = b[q_pair].astype(np.int64) * span + rank[q_pos]
    pos = np.minimum(np.searchsorted(table, query), len(table) - 1)
    hit = (table[pos] == query) & ~boiler[q_pos]
    return np.bincount(q_pair[hit], minlength=len(a))
