"""Phase 3, verify: one task per slice of the pair space. Candidate pairs are kept when their estimated Jaccard
passes `verify_threshold`; containment is counted exactly from the samples, for the pairs with enough shared
probes; exact pairs pass as they are. Writes the verified edges (a, b, kind, similarity)."""

from __future__ import annotations

import numpy as np

from kamado.corpus.dedup import clusters as cl
from kamado.corpus.dedup.contain import required_hits, shared_counts
from kamado.corpus.dedup.items import bucket_units, unit_name
from kamado.corpus.dedup.layout import dedup_dir, gather, sig_of, split_gids
from kamado.corpus.dedup.lsh import key_range, slice_sorted, unique_pairs
from kamado.corpus.dedup.minhash import estimated_jaccard
from kamado.corpus.dedup.store import Outputs, is_done, write_outputs
from kamado.recipe import Recipe
from kamado.stage import Workspace

CONTAIN_CHUNK = 250_000  # containment samples a verify task holds at once (~20 MB)


def _samples(ws: Workspace, gids: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """The containment samples of sorted global ids, concatenated in that order, and their offsets."""
    shards, rows = split_gids(gids)
    keys, counts = [], []
    for shard in np.unique(shards):
        sig = cache.setdefault(int(shard), sig_of(ws, int(shard)))
        r = rows[shards == shard]
        start, stop = sig.rows("frac_offsets", r), sig.rows("frac_offsets", r + 1)
        n = stop - start
        index = np.repeat(start - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(int(n.sum()))
        keys.append(sig.rows("frac_doc_keys", index))
        counts.append(n)
    counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    keys = np.concatenate(keys) if keys else np.empty(0, np.uint64)
    return keys, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _containment(recipe: Recipe, ws: Workspace, pairs: np.ndarray, hits: np.ndarray,
                 boilerplate: list[tuple[tuple, np.ndarray]], cache: dict):
    """Edges (small, large, containment) among candidate (small, large) pairs, counted exactly from samples, and
    the number of pairs counted.

    Only pairs with enough shared probes (`hits`, summed over key ranges) are counted: a contained pair has at
    least min(2, ceil(t·n)) (contain.py). They go in chunks whose two documents' samples add up to about
    CONTAIN_CHUNK: only a chunk's samples are in memory (the documents of a slice's pairs can be most of the
    corpus). `boilerplate`: each contain unit's key range and its boilerplate samples (those with any)."""
    cfg = recipe.corpus.dedup
    gids, inv = np.unique(pairs, return_inverse=True)
    n = (gather(recipe, ws, "frac_offsets", gids + np.uint64(1), cache)
         - gather(recipe, ws, "frac_offsets", gids, cache))[inv.reshape(-1, 2)]
    enough = hits >= required_hits(n[:, 0], cfg.containment_threshold)
    pairs, n = pairs[enough], n[enough]
    if not len(pairs):
        return np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0), 0
    cost = np.cumsum(n.sum(axis=1))
    ends = np.searchsorted(cost, np.arange(CONTAIN_CHUNK, cost[-1], CONTAIN_CHUNK), side="right")
    bounds = np.unique(np.concatenate([[0], ends, [len(pairs)]]))
    small, large, frac = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        chunk = pairs[a:b]
        docs, idx = np.unique(chunk, return_inverse=True)
        idx = idx.reshape(-1, 2)
        keys, offsets = _samples(ws, docs, cache)
        distinct, rank = np.unique(keys, return_inverse=True)
        common = np.zeros(len(distinct), dtype=bool)
        for (_, _, r, ranges, _), keys_of_unit in boilerplate:  # a unit's boilerplate keys against its range only
            s = slice_sorted(distinct, *key_range(r, ranges))
            if s.stop > s.start:
                common[s] = np.isin(distinct[s], keys_of_unit, assume_unique=True)
        boiler = common[rank]
        owner = np.repeat(np.arange(len(docs)), np.diff(offsets))
        n_small = np.bincount(owner[~boiler], minlength=len(docs))[idx[:, 0]]
        rank = rank.astype(np.int64)
        f = shared_counts(idx, rank, offsets, boiler) / np.maximum(n_small, 1)
        keep = (n_small >= cfg.containment_min_samples) & (f >= cfg.containment_threshold)
        small.append(chunk[keep, 0])
        large.append(chunk[keep, 1])
        frac.append(f[keep])
    return np.concatenate(small), np.concatenate(large), np.concatenate(frac), len(pairs)


def verify_item(recipe: Recipe, ws: Workspace, v: int) -> dict | None:
    folder, name = dedup_dir(ws) / "verify", f"{v:05d}"
    if is_done(folder, name):
        return None
    cfg = recipe.corpus.dedup
    parts: dict[str, list] = {"exact": [], "band": [], "contain": [], "hits": [], "common": []}
    for unit in bucket_units(recipe, ws):  # every unit's part for this slice: two offsets, then the part
        out = Outputs(dedup_dir(ws) / "buckets", unit_name(unit), "buckets")
        lo, hi = (int(x) for x in out.take("slice_offsets", v, v + 2))
        parts[unit[0]].append(out.take("pairs", lo, hi))
        if unit[0] == "contain":
            parts["hits"].append(out.take("hits", lo, hi))
            if out.stats.get("common_samples", 1):  # boilerplate keys (few): kept, not the unit's Outputs
                parts["common"].append((unit, out.array("common_keys")))
    cache: dict = {}
    edges, kinds, sims = [], [], []
    stats: dict = {}
    exact = unique_pairs(np.concatenate(parts["exact"]))[0] if parts["exact"] else np.empty((0, 2), np.uint64)
    edges.append(exact)
    kinds.append(np.full(len(exact), cl.EXACT, np.int8))
    sims.append(np.ones(len(exact), np.float32))
    stats["exact_pairs"] = len(exact)
    if parts["band"]:
        cand = unique_pairs(np.concatenate(parts["band"]))[0]
        est = estimated_jaccard(gather(recipe, ws, "minhash", cand[:, 0], cache),
                                gather(recipe, ws, "minhash", cand[:, 1], cache)) if len(cand) else np.zeros(0)
        keep = est >= cfg.verify_threshold
        stats.update(candidate_pairs=len(cand), near_pairs=int(keep.sum()), rejected_by_verify=int((~keep).sum()))
        edges.append(cand[keep])
        kinds.append(np.full(int(keep.sum()), cl.NEAR, np.int8))
        sims.append(est[keep].astype(np.float32))
    if parts["contain"]:
        pairs, hits = unique_pairs(np.concatenate(parts["contain"]), np.concatenate(parts["hits"]))
        if len(pairs):
            small, large, frac, counted = _containment(recipe, ws, pairs, hits, parts["common"], cache)
        else:
            small = large = np.empty(0, np.uint64)
            frac, counted = np.empty(0), 0
        stats.update(containment_pairs_seen=len(pairs), containment_pairs_counted=counted, contained_pairs=len(small))
        edges.append(np.stack([small, large], axis=1).astype(np.uint64))
        kinds.append(np.full(len(small), cl.CONTAINED, np.int8))
        sims.append(frac.astype(np.float32))
    arrays = {"edges": np.concatenate(edges).reshape(-1, 2), "kinds": np.concatenate(kinds), "sims": np.concatenate(sims)}
    write_outputs(folder, name, "verify", arrays, stats=stats)
    return stats
