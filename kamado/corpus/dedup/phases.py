"""The five dedup phases as sharded tasks: `run_phase(name, recipe, ws, task, num_tasks)`.

Each phase has a fixed list of items (shards, bucket units, pair slices); task t of T does items t, t+T, ...
so the same function runs in a local process pool (kamado/local.py) or as task SLURM_ARRAY_TASK_ID of a Slurm job
array. An item whose done-marker exists is skipped: a rerun does only what is missing.

Modules: layout.py (paths, global ids, the filter shards' lines), items.py (bucket units, pair slices), one per
phase (signatures.py, buckets.py, verify.py, apply.py with clusters), and this table of them.

Layout under <corpus>/work/dedup/:
    sig/SSSSS.*        per filter shard: ids, input order, exact key, shingle count, MinHash rows, band keys
                       (sorted per band), containment samples twice (sorted by key with their probe flags, for
                       buckets; per document, for verify), contaminated rows
    buckets/UNIT.*     per unit (exact-rRRRR, bandBB-rRRRR, contain-rRRRR; bandsBB-CC-r0000 when a corpus of
                       fewer than bucket_unit_docs / 2 documents puts bands BB..CC in one unit): pairs (contain:
                       (small, large) candidates with their shared probes in the range, and the range's
                       boilerplate samples)
    verify/VVVVV.*     per pair slice: verified edges (a, b, kind, similarity)
    clusters/SSSSS.*   per filter shard: removed rows, the kept id each duplicates and the id it matched, kind,
                       similarity; summary.*
    apply/SSSSS.*      per filter shard: final data shard written, counts, the duplicates.json entries

Memory per task, with D documents in a filter shard, U = bucket_unit_docs and S samples per document (about
characters / containment_scale); none of it grows with N, the documents of the corpus, which only adds tasks
(benchmarks/dedup_memory.py measures 1x/4x/16x; benchmarks/dedup_scale.py fits these against task inputs):
    signatures  two batches of shingles (≤ 2 × 0.5M × 8 B) + outputs of its shard (~1.1 KB × D, + ~21 B × S × D with
                containment)
    buckets     exact/band unit: ~80-120 B × its entries (≤ U: documents × bands in the unit); contain unit: ~90 B × its samples (~U: contain
                units range the sampled shingles, S × N / U of them) + its candidate pairs (each pair once per
                shared probe: ≤ S·(1 - t) + 1 times, whatever the ranges)
    verify      its slice of the candidate pairs (~ pairs per document × U) + their signature rows; containment:
                CONTAIN_CHUNK samples of its pairs' documents at a time (~20 MB), only for the pairs with two
                shared probes or more, + the boilerplate samples of every contain unit (8 B each; samples shared
                by > max_posting documents: 609 at 16x in benchmarks/dedup_memory.py). It opens every bucket
                unit's outputs (units grow with N) but reads two offsets and its own part of each.
    clusters    ~100 B × documents that have an edge (duplicates), one shard's ids at a time
    apply       one document at a time + its shard's removal list
Candidate pairs per document depend on the duplicates in the corpus, not on its size: at most (probes ×
max_posting) for containment, and one per band in which a document shares a bucket for near duplicates.
"""

from __future__ import annotations

import time
from typing import Callable

from kamado.corpus.dedup.apply import apply_item, clusters_item
from kamado.corpus.dedup.buckets import buckets_item
from kamado.corpus.dedup.items import bucket_units, pair_slices
from kamado.corpus.dedup.layout import filtered_path
from kamado.corpus.dedup.signatures import signatures_item
from kamado.corpus.dedup.verify import verify_item
from kamado.recipe import Recipe
from kamado.stage import Workspace

PHASES = ("signatures", "buckets", "verify", "clusters", "apply")
# Each phase's item function: does one item and returns its stats, or None when its done-marker was there.
RUN: dict[str, Callable[[Recipe, Workspace, int], dict | None]] = {
    "signatures": signatures_item, "buckets": buckets_item, "verify": verify_item, "clusters": clusters_item,
    "apply": apply_item,
}

__all__ = ["PHASES", "num_tasks_for", "run_phase", "local_workers"]


def num_tasks_for(name: str, recipe: Recipe, ws: Workspace) -> int:
    """How many tasks phase `name` can use (its number of items); the buckets phase needs signatures done."""
    if name in ("signatures", "apply"):
        return recipe.corpus.num_shards
    if name == "buckets":
        return len(bucket_units(recipe, ws))
    if name == "verify":
        return pair_slices(recipe, ws)
    if name == "clusters":
        return 1
    raise KeyError(f"unknown dedup phase {name!r} (phases: {', '.join(PHASES)})")


def run_phase(name: str, recipe: Recipe, ws: Workspace, task: int, num_tasks: int) -> dict:
    """Do task `task` of `num_tasks` of phase `name`: items task, task + num_tasks, ... of the phase."""
    if not 0 <= task < num_tasks:
        raise ValueError(f"dedup phase {name}: task {task} is not in 0..{num_tasks - 1}")
    fn = RUN[name]
    items = num_tasks_for(name, recipe, ws)
    stats = {"items": 0, "skipped_done": 0, "seconds": 0.0}
    start = time.time()
    for item in range(task, items, num_tasks):
        if fn(recipe, ws, item) is None:
            stats["skipped_done"] += 1
        stats["items"] += 1
    stats["seconds"] = round(time.time() - start, 3)
    return stats


# Total compressed size of the filter shards below which the local executor runs every phase in its own process, whatever
# `workers` says: for a small corpus a pool's start and the second decompression of each shard (apply reads what
# signatures read) cost more than they save; the lines signatures read are kept for apply (~6x this in memory:
# zstd packs Japanese text ~5.5:1).
SMALL_INPUT_BYTES = 16 << 20


def _filtered_bytes(recipe: Recipe, ws: Workspace) -> int:
    return sum(p.stat().st_size for s in range(recipe.corpus.num_shards) if (p := filtered_path(ws, s)).is_file())


def local_workers(recipe: Recipe, ws: Workspace) -> int:
    """Processes for a dedup phase on this machine: a small corpus (filter shards under SMALL_INPUT_BYTES) runs in
    the executor's own process, where apply reuses the lines signatures decompressed; else corpus.workers."""
    return 1 if _filtered_bytes(recipe, ws) < SMALL_INPUT_BYTES else max(1, recipe.corpus.workers)
