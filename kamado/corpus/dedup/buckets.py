"""Phase 2, buckets: one task per group of (kind, band, key range) units. Equal exact hashes → exact pairs; equal
band keys → candidate pairs; shared containment samples → (small, large) candidates with their shared probes.
Each unit's pairs are sorted by the verify slice they belong to, with offsets, so a verify task reads its part."""

from __future__ import annotations

import numpy as np

from kamado.corpus.dedup.contain import probe_pairs
from kamado.corpus.dedup.items import bucket_units, pair_slices, slice_of, unit_name
from kamado.corpus.dedup.layout import dedup_dir, gather, gid, sig_of
from kamado.corpus.dedup.lsh import key_range, ordered, star_pairs, unique_pairs
from kamado.corpus.dedup.store import is_done, write_outputs
from kamado.recipe import Recipe
from kamado.stage import Workspace


def buckets_item(recipe: Recipe, ws: Workspace, item: int) -> dict | None:
    unit = bucket_units(recipe, ws)[item]
    folder, name = dedup_dir(ws) / "buckets", unit_name(unit)
    if is_done(folder, name):
        return None
    kind, first_band, r, ranges, bands = unit
    lo, hi = key_range(r, ranges)
    if kind == "band":  # each band its own buckets; the unit's pairs are every band's, concatenated
        entries, pair_parts = 0, []
        sigs = [sig_of(ws, shard) for shard in range(recipe.corpus.num_shards)]  # opened once for every band
        for band in range(first_band, first_band + bands):
            keys, ids = _band_entries(sigs, band, lo, hi)
            o = np.lexsort((ids, keys))
            pair_parts.append(ordered(star_pairs(keys[o], ids[o])))
            entries += len(keys)
        pairs = unique_pairs(np.concatenate(pair_parts))[0]  # a pair found in several bands, once
        return _write_unit(recipe, ws, folder, name, kind, {"pairs": pairs},
                           {"unit": name, "entries": entries})
    keys_parts, lo_parts, id_parts, probe_parts = [], [], [], []
    for shard in range(recipe.corpus.num_shards):
        sig = sig_of(ws, shard)
        if kind == "exact":
            s = sig.search("exact_hi", lo, hi)
            keys_parts.append(sig.take("exact_hi", s.start, s.stop))
            lo_parts.append(sig.take("exact_lo", s.start, s.stop))
            id_parts.append(gid(shard, sig.take("exact_rows", s.start, s.stop)))
        else:
            s = sig.search("frac_keys", lo, hi)
            keys_parts.append(sig.take("frac_keys", s.start, s.stop))
            id_parts.append(gid(shard, sig.take("frac_rows", s.start, s.stop)))
            probe_parts.append(sig.take("frac_probe", s.start, s.stop))
    keys = np.concatenate(keys_parts) if keys_parts else np.empty(0, np.uint64)
    ids = np.concatenate(id_parts) if id_parts else np.empty(0, np.uint64)
    stats = {"unit": name, "entries": int(len(keys))}
    if kind == "exact":
        lows = np.concatenate(lo_parts) if lo_parts else np.empty(0, np.uint64)
        o = np.lexsort((ids, lows, keys))
        pairs = star_pairs(np.stack([keys[o], lows[o]], axis=1), ids[o])
        arrays = {"pairs": ordered(pairs)}
    else:
        probe = np.concatenate(probe_parts) if probe_parts else np.empty(0, bool)
        o = np.lexsort((ids, keys))
        # (small, large) candidates: a probe sample of the smaller document held by the larger one (contain.py)
        pairs, common = probe_pairs(keys[o], ids[o], probe[o], recipe.corpus.dedup.max_posting)
        pairs, hits = unique_pairs(pairs)  # hits: the pair's shared probes in this key range (verify sums them)
        if len(pairs):
            gids, inv = np.unique(pairs, return_inverse=True)
            size = gather(recipe, ws, "size", gids, {})[inv.reshape(-1, 2)]
            smaller = size[:, 0] < size[:, 1]
            pairs, hits = pairs[smaller], hits[smaller]
        arrays = {"pairs": pairs, "hits": hits.astype(np.uint32), "common_keys": np.unique(common)}
        stats["common_samples"] = int(len(common))
    return _write_unit(recipe, ws, folder, name, kind, arrays, stats)


def _band_entries(sigs: list, band: int, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """One band's (key, global id) entries in the key range [lo, hi), from every shard's signatures."""
    keys_parts, id_parts = [], []
    for shard, sig in enumerate(sigs):
        s = sig.search("band_keys", lo, hi, row=band)
        keys_parts.append(sig.take("band_keys", s.start, s.stop, row=band))
        id_parts.append(gid(shard, sig.take("band_rows", s.start, s.stop, row=band)))
    return (np.concatenate(keys_parts) if keys_parts else np.empty(0, np.uint64),
            np.concatenate(id_parts) if id_parts else np.empty(0, np.uint64))


def _write_unit(recipe: Recipe, ws: Workspace, folder, name: str, kind: str, arrays: dict, stats: dict) -> dict:
    common = arrays.pop("common_keys", None)
    # Sorted by the verify slice each pair belongs to, with offsets: a verify task reads only its own part.
    slices = pair_slices(recipe, ws)
    which = slice_of(arrays["pairs"], slices) if len(arrays["pairs"]) else np.zeros(0, np.int64)
    o = np.argsort(which, kind="stable")
    arrays = {k: v[o] for k, v in arrays.items()}
    arrays["slice_offsets"] = np.searchsorted(which[o], np.arange(slices + 1)).astype(np.int64)
    if common is not None:
        arrays["common_keys"] = common  # boilerplate samples of this key range, for verify
    stats["pairs"] = int(len(arrays["pairs"]))
    # each verify slice takes its part of the pairs (and of the offsets)
    write_outputs(folder, name, "buckets", arrays, stats=stats, fine=("pairs", "hits", "slice_offsets"))
    return stats
