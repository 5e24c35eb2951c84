"""Phase 1, signatures: one task per group of filter shards. Per document: fingerprint (ruby markup and whitespace
removed), exact hash, character n-gram MinHash and LSH band keys (sorted per band), containment samples,
eval-set contamination; written per shard under work/dedup/sig/."""

from __future__ import annotations

import zlib

import numpy as np

from kamado.corpus.dedup.contain import frac_sample, probes
from kamado.corpus.dedup.decontam import load_eval_ngrams
from kamado.corpus.dedup.exact import exact_key, fingerprint_text
from kamado.corpus.dedup.layout import dedup_dir, handed_over_minhash, read_filtered, uses_containment, uses_near
from kamado.corpus.dedup.lsh import band_keys
from kamado.corpus.dedup.minhash import MinHashBatches, MinHasher, shingle_hashes
from kamado.corpus.dedup.store import is_done, write_outputs
from kamado.recipe import Recipe
from kamado.stage import Workspace

BATCH_SHINGLES = 500_000  # shingle hashes per MinHash batch; two batches are held at once (8 MB)


def early_minhash(recipe: Recipe) -> MinHashBatches | None:
    """For the filter phase run in-process: the MinHash rows of the documents it keeps, computed in the background
    while it filters (on another core), handed to signatures with the lines (layout.hand_over). None: near dedup
    is off."""
    cfg = recipe.corpus.dedup
    return MinHashBatches(MinHasher(cfg.num_perm, cfg.seed, threads=1), BATCH_SHINGLES) if uses_near(recipe) else None


def minhash_input(recipe: Recipe, text: str) -> np.ndarray:
    """A document's shingle hashes, as signatures hashes them (its fingerprint text's character n-grams)."""
    return shingle_hashes(fingerprint_text(text), recipe.corpus.dedup.ngram)
# Signature files every bucket unit reads a key-range slice of, from every shard: small checksum blocks (store.py),
# so that a unit reads and checks about the bytes of its slice, not a whole 1 MiB block per file and shard.
SLICED = ("exact_hi", "exact_lo", "exact_rows", "band_keys", "band_rows", "frac_keys", "frac_rows", "frac_probe")


def signatures_item(recipe: Recipe, ws: Workspace, shard: int) -> dict | None:
    folder, name = dedup_dir(ws) / "sig", f"{shard:05d}"
    if is_done(folder, name):
        return None
    cfg = recipe.corpus.dedup
    near, contain = uses_near(recipe), uses_containment(recipe)
    # MinHash rows: computed by the filter phase while it filtered (in-process, handed over), else here
    early = handed_over_minhash(ws, shard) if near else None
    minhash = MinHashBatches(MinHasher(cfg.num_perm, cfg.seed), BATCH_SHINGLES) if near and early is None else None
    evals = load_eval_ngrams(cfg.decontam_paths, cfg.decontam_ngram) if cfg.decontam_paths else None
    ids, orders, exact, sizes = [], [], [], []
    line_crc, chars, source_of = [], [], []
    sources: dict[str, int] = {}
    frac_keys, frac_rows, frac_probe = [], [], []
    contaminated: list[list] = []
    excluded: list[int] = []

    for row, (line, doc) in enumerate(read_filtered(ws, shard, keep=True)):
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
        if minhash is not None:
            minhash.add(h)
        if contain:
            sample = frac_sample(h, cfg.containment_scale)
            frac_keys.append(sample)
            frac_rows.append(np.full(len(sample), row, dtype=np.uint32))
            frac_probe.append(probes(sample, cfg.containment_threshold, cfg.containment_min_samples))
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
        sigs = (early or minhash).result()
        if len(sigs) != n:  # the handed-over rows are of this shard's documents, in order, or nothing is
            raise RuntimeError(f"corpus shard {shard}: {len(sigs)} MinHash rows for {n} documents")
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
