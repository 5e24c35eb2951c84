"""The five dedup phases as sharded tasks: `run_phase(name, recipe, ws, task, num_tasks)`.

Each phase has a fixed list of items (shards, bucket units, pair slices); task t of T does items t, t+T, ...
so the same function runs in a local process pool (`run_local`) or as task SLURM_ARRAY_TASK_ID of a Slurm job
array. An item whose done-marker exists is skipped: a rerun does only what is missing.

Layout under <corpus>/work/dedup/:
    sig/SSSSS.*        per filter shard: ids, input order, exact key, shingle count, MinHash rows, band keys
                       (sorted per band), containment samples twice (sorted by key with their probe flags, for
                       buckets; per document, for verify), contaminated rows
    buckets/UNIT.*     per unit (exact-rRRRR, bandBB-rRRRR, contain-rRRRR): pairs (contain: (small, large)
                       candidates with their shared probes in the range, and the range's boilerplate samples)
    verify/VVVVV.*     per pair slice: verified edges (a, b, kind, similarity)
    clusters/SSSSS.*   per filter shard: removed rows, the kept id each duplicates and the id it matched, kind,
                       similarity; summary.*
    apply/SSSSS.*      per filter shard: final data shard written, counts, the duplicates.json entries

Memory per task, with D documents in a filter shard, U = bucket_unit_docs and S samples per document (about
characters / containment_scale); none of it grows with N, the documents of the corpus, which only adds tasks
(benchmarks/dedup_memory.py measures 1x/4x/16x; benchmarks/dedup_scale.py fits these against task inputs):
    signatures  one batch of shingles (≤ 4M × 8 B) + outputs of its shard (~1.1 KB × D, + ~21 B × S × D with
                containment)
    buckets     exact/band unit: ~80-120 B × its documents (~U); contain unit: ~90 B × its samples (~U: contain
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

import io
import json
import math
import zlib
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np

from kamado.corpus.dedup import clusters as cl
from kamado.corpus.dedup.contain import frac_sample, probe_pairs, probes, required_hits, shared_counts
from kamado.corpus.dedup.decontam import load_eval_ngrams
from kamado.corpus.dedup.exact import exact_key, fingerprint_text
from kamado.corpus.dedup.gzip_out import open_gzip_writer
from kamado.corpus.dedup.lsh import band_keys, key_range, ordered, slice_sorted, star_pairs, unique_pairs
from kamado.corpus.dedup.minhash import MinHasher, estimated_jaccard, mix64, shingle_hashes
from kamado.corpus.dedup.store import CorruptInput, Outputs, is_done, write_outputs
from kamado.corpus.readers import open_binary
from kamado.phase_tasks import in_process
from kamado.recipe import Recipe
from kamado.stage import Workspace

PHASES = ("signatures", "buckets", "verify", "clusters", "apply")
BATCH_SHINGLES = 4_000_000  # shingle hashes held at once by a signatures task (32 MB)
CONTAIN_CHUNK = 250_000  # containment samples a verify task holds at once (~20 MB)
# Signature files every bucket unit reads a key-range slice of, from every shard: small checksum blocks (store.py),
# so that a unit reads and checks about the bytes of its slice, not a whole 1 MiB block per file and shard.
SLICED = ("exact_hi", "exact_lo", "exact_rows", "band_keys", "band_rows", "frac_keys", "frac_rows", "frac_probe")
DROP_REASONS = {cl.EXACT: "exact_duplicate", cl.NEAR: "near_duplicate", cl.CONTAINED: "contained_duplicate"}

__all__ = ["PHASES", "CorruptInput", "num_tasks_for", "run_phase", "local_workers", "forget_kept_lines"]


# ---------------------------------------------------------------- layout
def dedup_dir(ws: Workspace) -> Path:
    return ws.stage_dir("corpus") / "work" / "dedup"


def filtered_path(ws: Workspace, shard: int) -> Path:
    return ws.stage_dir("corpus") / "work" / f"filtered-{shard:05d}.jsonl.zst"


@contextmanager
def write_filtered(path: Path) -> Iterator[IO[str]]:
    """A filter shard, written as zstd (level 3): on Japanese prose ~5x cheaper to write and ~6x cheaper to read
    than gzip level 1, and half its size (gzip level 9 took half of a whole near-dedup run). Read back with
    kamado.corpus.readers.open_binary, which raises on a file cut inside a frame."""
    import zstandard

    with open(path, "wb") as raw, \
            io.TextIOWrapper(zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False), encoding="utf-8") as out:
        yield out


def data_path(ws: Workspace, shard: int) -> Path:
    return ws.stage_dir("corpus") / "data" / f"shard-{shard:05d}.jsonl.gz"


def _gid(shard: int, rows: np.ndarray) -> np.ndarray:
    return (np.uint64(shard) << np.uint64(32)) | rows.astype(np.uint64)


def _split(gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (gids >> np.uint64(32)).astype(np.int64), (gids & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _near(recipe: Recipe) -> bool:
    return recipe.corpus.dedup.near


def _contain(recipe: Recipe) -> bool:
    return recipe.corpus.dedup.near and recipe.corpus.dedup.containment


def _sig(ws: Workspace, shard: int) -> Outputs:
    return Outputs(dedup_dir(ws) / "sig", f"{shard:05d}", "signatures")


# Total compressed size of the filter shards below which the local executor runs every phase in its own process, whatever
# `workers` says: for a small corpus a pool's start and the second decompression of each shard (apply reads what
# signatures read) cost more than they save; the lines signatures read are kept for apply (~6x this in memory:
# zstd packs Japanese text ~5.5:1).
SMALL_INPUT_BYTES = 16 << 20
_KEPT_LINES: dict[tuple, list[bytes]] = {}  # (path, inode, mtime, size) -> lines, only while the phases run in-process


def _filtered_lines(ws: Workspace, shard: int, keep: bool = False) -> Iterator[bytes]:
    """The filter shard's lines as bytes (each with its newline): apply copies kept lines as they are. In an
    in-process run of a small corpus (local_workers), the lines signatures read (`keep`) are handed to apply."""
    path = filtered_path(ws, shard)
    done = path.with_name(f"filtered-{shard:05d}.done.json")
    if not done.is_file():
        raise CorruptInput(f"{done}: missing: corpus shard {shard} was not filtered; run the corpus stage again")
    st = path.stat()
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    if key in _KEPT_LINES:
        yield from _KEPT_LINES.pop(key)
        return
    if not (keep and in_process()):
        with open_binary(str(path)) as fh:
            yield from fh
        return
    lines = []
    with open_binary(str(path)) as fh:
        for line in fh:
            lines.append(line)
            yield line
    _KEPT_LINES[key] = lines


def _read_filtered(ws: Workspace, shard: int, keep: bool = False) -> Iterator[tuple[bytes, dict]]:
    """(line, document) for each line of the filter shard."""
    for line_no, line in enumerate(_filtered_lines(ws, shard, keep), 1):
        try:
            yield line, json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorruptInput(f"{filtered_path(ws, shard)}:{line_no}: not valid JSON ({exc.msg}); "
                               f"run the corpus stage again") from exc


# ---------------------------------------------------------------- items per phase
_UNITS: dict[tuple, list] = {}  # per process: every bucket unit and verify slice asks for the unit list


def _bucket_units(recipe: Recipe, ws: Workspace) -> list[tuple[str, int, int, int]]:
    """(kind, band, range, num_ranges) units; the number of key ranges grows with the corpus (from signatures).
    Kept per process while the signature markers are unchanged: the list reads every shard's marker."""
    sig = dedup_dir(ws) / "sig"
    markers = []
    for s in range(recipe.corpus.num_shards):
        try:
            st = (sig / f"{s:05d}.done.json").stat()
            markers.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            markers.append(None)  # _sig raises the error that names it
    key = (str(sig), recipe.corpus.exact_dedup, repr(recipe.corpus.dedup), tuple(markers))
    if key not in _UNITS:
        _UNITS.clear()
        _UNITS[key] = _list_units(recipe, ws)
    return _UNITS[key]


def _list_units(recipe: Recipe, ws: Workspace) -> list[tuple[str, int, int, int]]:
    cfg = recipe.corpus.dedup
    ranges = _ranges(recipe, ws)
    units = []
    if recipe.corpus.exact_dedup:
        units += [("exact", 0, r, ranges) for r in range(ranges)]
    if _near(recipe):
        units += [("band", b, r, ranges) for b in range(cfg.bands) for r in range(ranges)]
    if _contain(recipe):  # ranged by sampled shingles, not documents: a unit holds ≤ bucket_unit_docs entries
        samples = sum(_sig(ws, s).stats.get("samples", 0) for s in range(recipe.corpus.num_shards))
        contain_ranges = max(1, math.ceil(samples / cfg.bucket_unit_docs))
        units += [("contain", 0, r, contain_ranges) for r in range(contain_ranges)]
    return units


def _unit_name(unit: tuple[str, int, int, int]) -> str:
    kind, band, r, _ = unit
    return f"band{band:02d}-r{r:04d}" if kind == "band" else f"{kind}-r{r:04d}"


def _ranges(recipe: Recipe, ws: Workspace) -> int:
    """Key ranges per band (and pair slices for verify): one per `bucket_unit_docs` documents in the corpus."""
    docs = sum(_sig(ws, s).stats["docs"] for s in range(recipe.corpus.num_shards))
    return max(1, math.ceil(docs / recipe.corpus.dedup.bucket_unit_docs))


_slices = _ranges  # verify slices the pair space as finely as the buckets phase slices the keys


def num_tasks_for(name: str, recipe: Recipe, ws: Workspace) -> int:
    """How many tasks phase `name` can use (its number of items); the buckets phase needs signatures done."""
    if name in ("signatures", "apply"):
        return recipe.corpus.num_shards
    if name == "buckets":
        return len(_bucket_units(recipe, ws))
    if name == "verify":
        return _slices(recipe, ws)
    if name == "clusters":
        return 1
    raise KeyError(f"unknown dedup phase {name!r} (phases: {', '.join(PHASES)})")


def run_phase(name: str, recipe: Recipe, ws: Workspace, task: int, num_tasks: int) -> dict:
    """Do task `task` of `num_tasks` of phase `name`: items task, task + num_tasks, ... of the phase."""
    if not 0 <= task < num_tasks:
        raise ValueError(f"dedup phase {name}: task {task} is not in 0..{num_tasks - 1}")
    fn: Callable[[Recipe, Workspace, int], dict] = {
        "signatures": _signatures, "buckets": _buckets, "verify": _verify, "clusters": _clusters, "apply": _apply,
    }[name]
    items = num_tasks_for(name, recipe, ws)
    stats = {"items": 0, "skipped_done": 0, "seconds": 0.0}
    start = time.time()
    for item in range(task, items, num_tasks):
        if fn(recipe, ws, item) is None:
            stats["skipped_done"] += 1
        stats["items"] += 1
    stats["seconds"] = round(time.time() - start, 3)
    return stats


# ---------------------------------------------------------------- 1. signatures
def _signatures(recipe: Recipe, ws: Workspace, shard: int) -> dict | None:
    folder, name = dedup_dir(ws) / "sig", f"{shard:05d}"
    if is_done(folder, name):
        return None
    cfg = recipe.corpus.dedup
    near, contain = _near(recipe), _contain(recipe)
    hasher = MinHasher(cfg.num_perm, cfg.seed) if near else None
    evals = load_eval_ngrams(cfg.decontam_paths, cfg.decontam_ngram) if cfg.decontam_paths else None
    ids, orders, exact, sizes = [], [], [], []
    line_crc, chars, source_of = [], [], []
    sources: dict[str, int] = {}
    sig_parts, frac_keys, frac_rows, frac_probe = [], [], [], []
    contaminated: list[list] = []
    excluded: list[int] = []
    batch: list[np.ndarray] = []
    pending = 0

    def flush() -> None:
        nonlocal pending
        if batch:
            sig_parts.append(hasher.signatures(batch))
            batch.clear()
        pending = 0

    for row, (line, doc) in enumerate(_read_filtered(ws, shard, keep=True)):
        ids.append(str(doc["id"]))
        line_crc.append(zlib.crc32(line))  # apply copies the line as it is: the CRC tells it is the same line
        chars.append(len(doc["text"]))
        source = doc.get("meta", {}).get("source", "?")
        source_of.append(sources.setdefault(source, len(sources)))
        orders.append(doc.get("meta", {}).get("order") or [shard, row, 0])
        fp = fingerprint_text(doc["text"])
        exact.append(exact_key(fp))
        if evals is not None:
            hit = evals.match(shingle_hashes(fp, cfg.decontam_ngram)) if len(fp) >= cfg.decontam_ngram else None
            if hit:
                contaminated.append([row, hit])
                excluded.append(row)
        h = shingle_hashes(fp, cfg.ngram) if near else np.empty(0, np.uint64)
        sizes.append(len(h))
        if near:
            batch.append(h)
            pending += len(h)
            if pending >= BATCH_SHINGLES:
                flush()
        if contain:
            sample = frac_sample(h, cfg.containment_scale)
            frac_keys.append(sample)
            frac_rows.append(np.full(len(sample), row, dtype=np.uint32))
            frac_probe.append(probes(sample, cfg.containment_threshold, cfg.containment_min_samples))
    if near:
        flush()
    n = len(ids)
    # Documents that take part: not contaminated (they are dropped anyway), and with a shingle for near dedup.
    active = np.ones(n, dtype=bool)
    active[excluded] = False
    exact_arr = np.array(exact, dtype=np.uint64).reshape(n, 2)
    arrays = {
        "order": np.array(orders, dtype=np.int64).reshape(n, -1) if n else np.zeros((0, 3), np.int64),
        "exact": exact_arr,
        "size": np.array(sizes, dtype=np.uint32),
        "line_crc": np.array(line_crc, dtype=np.uint32),
        "chars": np.array(chars, dtype=np.int64),
        "source": np.array(source_of, dtype=np.int32),
    }
    ex_rows = np.flatnonzero(active).astype(np.uint32)
    ex_sorted = ex_rows[np.argsort(exact_arr[ex_rows, 0], kind="stable")]
    arrays["exact_hi"] = exact_arr[ex_sorted, 0]
    arrays["exact_lo"] = exact_arr[ex_sorted, 1]
    arrays["exact_rows"] = ex_sorted
    if near:
        sigs = np.concatenate(sig_parts) if sig_parts else np.zeros((0, cfg.num_perm), np.uint32)
        arrays["minhash"] = sigs
        rows = np.flatnonzero(active & (arrays["size"] > 0)).astype(np.uint32)
        keys = band_keys(sigs[rows], cfg.bands, cfg.rows)  # [bands, m]
        order = np.argsort(keys, axis=1, kind="stable")
        arrays["band_keys"] = np.take_along_axis(keys, order, axis=1)
        arrays["band_rows"] = rows[order]
    if contain:
        fk = np.concatenate(frac_keys) if frac_keys else np.empty(0, np.uint64)
        fr = np.concatenate(frac_rows) if frac_rows else np.empty(0, np.uint32)
        fp = np.concatenate(frac_probe) if frac_probe else np.empty(0, bool)
        # per document (row order, each sorted): what verify counts |A ∩ B| from
        arrays["frac_doc_keys"] = fk
        arrays["frac_offsets"] = np.concatenate([[0], np.cumsum([len(k) for k in frac_keys])]).astype(np.int64)
        keep = active[fr] if len(fr) else np.zeros(0, dtype=bool)
        fk, fr, fp = fk[keep], fr[keep], fp[keep]
        o = np.argsort(fk, kind="stable")
        # sorted by key: what the buckets phase slices into key ranges
        arrays["frac_keys"], arrays["frac_rows"], arrays["frac_probe"] = fk[o], fr[o], fp[o]
    stats = {"docs": n, "contaminated": len(contaminated), "no_shingle": int((arrays["size"] == 0).sum()) if near else 0,
             "samples": int(len(arrays["frac_keys"])) if contain else 0}
    write_outputs(folder, name, "signatures", arrays, docs={"ids": ids, "contaminated": contaminated, "sources": list(sources)}, stats=stats,
                  fine=SLICED)
    return stats


# ---------------------------------------------------------------- 2. buckets
def _buckets(recipe: Recipe, ws: Workspace, item: int) -> dict | None:
    unit = _bucket_units(recipe, ws)[item]
    folder, name = dedup_dir(ws) / "buckets", _unit_name(unit)
    if is_done(folder, name):
        return None
    kind, band, r, ranges = unit
    lo, hi = key_range(r, ranges)
    keys_parts, lo_parts, id_parts, probe_parts = [], [], [], []
    for shard in range(recipe.corpus.num_shards):
        sig = _sig(ws, shard)
        if kind == "exact":
            s = sig.search("exact_hi", lo, hi)
            keys_parts.append(sig.take("exact_hi", s.start, s.stop))
            lo_parts.append(sig.take("exact_lo", s.start, s.stop))
            id_parts.append(_gid(shard, sig.take("exact_rows", s.start, s.stop)))
        elif kind == "band":
            s = sig.search("band_keys", lo, hi, row=band)
            keys_parts.append(sig.take("band_keys", s.start, s.stop, row=band))
            id_parts.append(_gid(shard, sig.take("band_rows", s.start, s.stop, row=band)))
        else:
            s = sig.search("frac_keys", lo, hi)
            keys_parts.append(sig.take("frac_keys", s.start, s.stop))
            id_parts.append(_gid(shard, sig.take("frac_rows", s.start, s.stop)))
            probe_parts.append(sig.take("frac_probe", s.start, s.stop))
    keys = np.concatenate(keys_parts) if keys_parts else np.empty(0, np.uint64)
    ids = np.concatenate(id_parts) if id_parts else np.empty(0, np.uint64)
    stats = {"unit": name, "entries": int(len(keys))}
    if kind == "exact":
        lows = np.concatenate(lo_parts) if lo_parts else np.empty(0, np.uint64)
        o = np.lexsort((ids, lows, keys))
        pairs = star_pairs(np.stack([keys[o], lows[o]], axis=1), ids[o])
        arrays = {"pairs": ordered(pairs)}
    elif kind == "band":
        o = np.lexsort((ids, keys))
        arrays = {"pairs": ordered(star_pairs(keys[o], ids[o]))}
    else:
        probe = np.concatenate(probe_parts) if probe_parts else np.empty(0, bool)
        o = np.lexsort((ids, keys))
        # (small, large) candidates: a probe sample of the smaller document held by the larger one (contain.py)
        pairs, common = probe_pairs(keys[o], ids[o], probe[o], recipe.corpus.dedup.max_posting)
        pairs, hits = unique_pairs(pairs)  # hits: the pair's shared probes in this key range (verify sums them)
        if len(pairs):
            gids, inv = np.unique(pairs, return_inverse=True)
            size = _gather(recipe, ws, "size", gids, {})[inv.reshape(-1, 2)]
            smaller = size[:, 0] < size[:, 1]
            pairs, hits = pairs[smaller], hits[smaller]
        arrays = {"pairs": pairs, "hits": hits.astype(np.uint32)}
        stats["common_samples"] = int(len(common))
    # Sorted by the verify slice each pair belongs to, with offsets: a verify task reads only its own part.
    slices = _slices(recipe, ws)
    which = _slice_of(arrays["pairs"], slices) if len(arrays["pairs"]) else np.zeros(0, np.int64)
    o = np.argsort(which, kind="stable")
    arrays = {k: v[o] for k, v in arrays.items()}
    arrays["slice_offsets"] = np.searchsorted(which[o], np.arange(slices + 1)).astype(np.int64)
    if kind == "contain":
        arrays["common_keys"] = np.unique(common)  # boilerplate samples of this key range, for verify
    stats["pairs"] = int(len(arrays["pairs"]))
    # each verify slice takes its part of the pairs (and of the offsets)
    write_outputs(folder, name, "buckets", arrays, stats=stats, fine=("pairs", "hits", "slice_offsets"))
    return stats


# ---------------------------------------------------------------- 3. verify
def _slice_of(pairs: np.ndarray, slices: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = mix64(pairs[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ pairs[:, 1])
    return (h % np.uint64(slices)).astype(np.int64)


def _gather(recipe: Recipe, ws: Workspace, key: str, gids: np.ndarray, cache: dict) -> np.ndarray:
    """Rows `key` of the signature outputs for global ids, shard by shard (mapped files, checked blocks)."""
    shards, rows = _split(gids)
    out = None
    for shard in np.unique(shards):
        sig = cache.setdefault(int(shard), _sig(ws, int(shard)))
        sel = shards == shard
        part = sig.rows(key, rows[sel])
        if out is None:
            out = np.empty((len(gids),) + part.shape[1:], dtype=part.dtype)
        out[sel] = part
    return out if out is not None else np.empty(0)


def _samples(ws: Workspace, gids: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """The containment samples of sorted global ids, concatenated in that order, and their offsets."""
    shards, rows = _split(gids)
    keys, counts = [], []
    for shard in np.unique(shards):
        sig = cache.setdefault(int(shard), _sig(ws, int(shard)))
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
    n = (_gather(recipe, ws, "frac_offsets", gids + np.uint64(1), cache)
         - _gather(recipe, ws, "frac_offsets", gids, cache))[inv.reshape(-1, 2)]
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
        for (_, _, r, ranges), keys_of_unit in boilerplate:  # a unit's boilerplate keys against its range only
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


def _verify(recipe: Recipe, ws: Workspace, v: int) -> dict | None:
    folder, name = dedup_dir(ws) / "verify", f"{v:05d}"
    if is_done(folder, name):
        return None
    cfg = recipe.corpus.dedup
    parts: dict[str, list] = {"exact": [], "band": [], "contain": [], "hits": [], "common": []}
    for unit in _bucket_units(recipe, ws):  # every unit's part for this slice: two offsets, then the part
        out = Outputs(dedup_dir(ws) / "buckets", _unit_name(unit), "buckets")
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
        est = estimated_jaccard(_gather(recipe, ws, "minhash", cand[:, 0], cache),
                                _gather(recipe, ws, "minhash", cand[:, 1], cache)) if len(cand) else np.zeros(0)
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


# ---------------------------------------------------------------- 4. clusters
def _clusters(recipe: Recipe, ws: Workspace, item: int) -> dict | None:
    folder = dedup_dir(ws) / "clusters"
    if is_done(folder, "summary"):
        return None
    edges, kinds, sims = [], [], []
    for v in range(_slices(recipe, ws)):
        out = Outputs(dedup_dir(ws) / "verify", f"{v:05d}", "verify")
        edges.append(out.array("edges"))
        kinds.append(out.array("kinds"))
        sims.append(out.array("sims"))
    cache: dict = {}

    def info(nodes: np.ndarray):
        return (_gather(recipe, ws, "order", nodes, cache), _gather(recipe, ws, "exact", nodes, cache),
                _gather(recipe, ws, "size", nodes, cache))

    removal = cl.cluster(np.concatenate(edges).reshape(-1, 2), np.concatenate(kinds), np.concatenate(sims), info)
    # Resolve the ids of the kept and the directly matched documents, one shard's id list at a time.
    kept_ids, matched_ids = _ids_of(ws, removal.kept), _ids_of(ws, removal.duplicate_of)
    rm_shard, rm_row = _split(removal.gid)
    for shard in range(recipe.corpus.num_shards):
        sel = rm_shard == shard
        write_outputs(folder, f"{shard:05d}", "clusters",
                      {"rows": rm_row[sel], "kind": removal.kind[sel], "sim": removal.similarity[sel].astype(np.float32)},
                      docs={"duplicate_of": list(kept_ids[sel]), "matched": list(matched_ids[sel])},
                      stats={"removed": int(sel.sum())})
    sizes = Counter(int(s) for s in removal.cluster_sizes)
    stats = {
        "clusters": int(len(removal.cluster_sizes)),
        "docs_in_clusters": int(removal.cluster_sizes.sum()),
        "largest_cluster": int(removal.cluster_sizes.max()) if len(removal.cluster_sizes) else 0,
        "cluster_sizes": {str(k): sizes[k] for k in sorted(sizes)},
        "removed": {cl.KIND_NAMES[k]: int((removal.kind == k).sum()) for k in cl.KIND_NAMES},
    }
    write_outputs(folder, "summary", "clusters", stats=stats)
    return stats


def _ids_of(ws: Workspace, gids: np.ndarray) -> np.ndarray:
    """Document ids of global ids, reading one shard's id list at a time."""
    shards, rows = _split(gids)
    out = np.empty(len(gids), dtype=object)
    for shard in np.unique(shards):
        ids = _sig(ws, int(shard)).json("ids")
        sel = np.flatnonzero(shards == shard)
        out[sel] = [ids[r] for r in rows[sel]]
    return out


# ---------------------------------------------------------------- 5. apply
def _apply(recipe: Recipe, ws: Workspace, shard: int) -> dict | None:
    folder, name = dedup_dir(ws) / "apply", f"{shard:05d}"
    if is_done(folder, name):
        return None
    sig = _sig(ws, shard)
    rm = Outputs(dedup_dir(ws) / "clusters", f"{shard:05d}", "clusters")
    ids = sig.json("ids")
    drop: dict[int, dict] = {}  # row -> its duplicates.json entry
    reason: dict[int, str] = {}  # row -> the drop reason counted in the report
    for row, where in sig.json("contaminated"):
        drop[row] = {"id": ids[row], "duplicate_of": None, "kind": "contaminated", "eval": where}
        reason[row] = "contaminated"
    for row, kind, sim, dup, matched in zip(rm.array("rows"), rm.array("kind"), rm.array("sim"), rm.json("duplicate_of"),
                                            rm.json("matched")):
        row, kind = int(row), int(kind)
        # duplicate_of: the kept document (open it to audit); matched: the direct match, which `kind` and
        # `similarity` describe (the same document unless the match was itself removed).
        drop[row] = {"id": ids[row], "duplicate_of": dup, "matched": matched, "kind": cl.KIND_NAMES[kind],
                     "similarity": round(float(sim), 4)}
        reason[row] = DROP_REASONS[kind]
    # The kept lines are copied as the filter pass wrote them (no JSON decoding and encoding again); the counts
    # come from the signatures outputs. Level 1: a third of level 3's time for ~12% more bytes (and level 9,
    # gzip's default, was 60% of the phase); ISA-L's igzip when installed, 4x faster than zlib (gzip_out.py).
    line_crc, chars, source = sig.array("line_crc"), sig.array("chars"), sig.array("source")
    keep = np.ones(len(ids), dtype=bool)
    keep[list(reason)] = False
    out_path = data_path(ws, shard)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    rows = 0
    with open_gzip_writer(tmp) as out:
        kept_lines: list[bytes] = []
        for row, line in enumerate(_filtered_lines(ws, shard)):
            if row >= len(ids) or zlib.crc32(line) != line_crc[row]:
                _changed_filter_shard(ws, shard, row, line)
            if keep[row]:
                kept_lines.append(line)
                if len(kept_lines) >= 1024:
                    out.write(b"".join(kept_lines))
                    kept_lines.clear()
            rows += 1
        out.write(b"".join(kept_lines))
    if rows != len(ids):
        _changed_filter_shard(ws, shard, rows, b"")
    tmp.replace(out_path)
    names = sig.json("sources")
    kept = int(keep.sum())
    chars = int(chars[keep].sum())
    dropped = Counter(reason.values())
    per_source = Counter({names[i]: int(c) for i, c in enumerate(np.bincount(source[keep], minlength=len(names))) if c})
    stats = {"kept": kept, "chars_out": chars, "dropped": dict(dropped), "kept_per_source": dict(per_source)}
    write_outputs(folder, name, "apply", docs={"duplicates": [drop[r] for r in sorted(drop)]}, stats=stats)
    return stats


def _changed_filter_shard(ws: Workspace, shard: int, row: int, line: bytes) -> None:
    try:
        what = f"document {json.loads(line).get('id')!r}" if line.strip() else "the end of the file"
    except (json.JSONDecodeError, AttributeError):
        what = "a line that is not a JSON document"
    raise CorruptInput(f"{filtered_path(ws, shard)}:{row + 1}: {what} is not what the signatures phase saw; the "
                       f"filter shard changed: run the dedup phases again")


def apply_results(ws: Workspace, num_shards: int) -> Iterator[Outputs]:
    for shard in range(num_shards):
        yield Outputs(dedup_dir(ws) / "apply", f"{shard:05d}", "apply")


def clusters_summary(ws: Workspace) -> dict:
    return Outputs(dedup_dir(ws) / "clusters", "summary", "clusters").stats


# ---------------------------------------------------------------- local executor
def _filtered_bytes(recipe: Recipe, ws: Workspace) -> int:
    return sum(p.stat().st_size for s in range(recipe.corpus.num_shards) if (p := filtered_path(ws, s)).is_file())


def local_workers(recipe: Recipe, ws: Workspace) -> int:
    """Processes for a dedup phase on this machine: a small corpus (filter shards under SMALL_INPUT_BYTES) runs in
    the executor's own process, where apply reuses the lines signatures decompressed; else corpus.workers."""
    return 1 if _filtered_bytes(recipe, ws) < SMALL_INPUT_BYTES else max(1, recipe.corpus.workers)


def forget_kept_lines() -> None:
    _KEPT_LINES.clear()
