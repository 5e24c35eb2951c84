"""The items each dedup phase works through: shards (signatures, apply), bucket units (kind, band, key range),
pair slices (verify). Their number grows with the corpus, read from the signatures outputs."""

from __future__ import annotations

import math

import numpy as np

from kamado.corpus.dedup.layout import dedup_dir, sig_of, uses_containment, uses_near
from kamado.corpus.dedup.minhash import mix64
from kamado.recipe import Recipe
from kamado.stage import Workspace


_UNITS: dict[tuple, list] = {}  # per process: every bucket unit and verify slice asks for the unit list


def bucket_units(recipe: Recipe, ws: Workspace) -> list[tuple[str, int, int, int, int]]:
    """(kind, first band, range, num_ranges, bands) units; the number of key ranges grows with the corpus (from
    signatures). Kept per process while the signature markers are unchanged: the list reads every shard's marker."""
    sig = dedup_dir(ws) / "sig"
    markers = []
    for s in range(recipe.corpus.num_shards):
        try:
            st = (sig / f"{s:05d}.done.json").stat()
            markers.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            markers.append(None)  # sig_of raises the error that names it
    key = (str(sig), recipe.corpus.exact_dedup, repr(recipe.corpus.dedup), tuple(markers))
    if key not in _UNITS:
        _UNITS.clear()
        _UNITS[key] = _list_units(recipe, ws)
    return _UNITS[key]


def _list_units(recipe: Recipe, ws: Workspace) -> list[tuple[str, int, int, int, int]]:
    cfg = recipe.corpus.dedup
    docs = corpus_docs(recipe, ws)
    ranges = _ranges(docs, cfg.bucket_unit_docs)
    units = []
    if recipe.corpus.exact_dedup:
        units += [("exact", 0, r, ranges, 1) for r in range(ranges)]
    if uses_near(recipe):
        # A unit holds about bucket_unit_docs band entries: one band per unit on a large corpus; on a small one
        # several bands share a unit (454 documents: 1 unit, not 20), since each unit's start and durable
        # outputs cost more than its work there. Each band still has its own buckets (a key means nothing in
        # another band); verify reads the pairs of every band alike.
        per_unit = max(1, min(cfg.bands, cfg.bucket_unit_docs // max(1, docs))) if ranges == 1 else 1
        units += [("band", b, r, ranges, min(per_unit, cfg.bands - b))
                  for b in range(0, cfg.bands, per_unit) for r in range(ranges)]
    if uses_containment(recipe):  # ranged by sampled shingles, not documents: a unit holds ≤ bucket_unit_docs entries
        samples = sum(sig_of(ws, s).stats.get("samples", 0) for s in range(recipe.corpus.num_shards))
        contain_ranges = max(1, math.ceil(samples / cfg.bucket_unit_docs))
        units += [("contain", 0, r, contain_ranges, 1) for r in range(contain_ranges)]
    return units


def unit_name(unit: tuple[str, int, int, int, int]) -> str:
    kind, band, r, _, bands = unit
    if kind != "band":
        return f"{kind}-r{r:04d}"
    return f"band{band:02d}-r{r:04d}" if bands == 1 else f"bands{band:02d}-{band + bands - 1:02d}-r{r:04d}"


def corpus_docs(recipe: Recipe, ws: Workspace) -> int:
    return sum(sig_of(ws, s).stats["docs"] for s in range(recipe.corpus.num_shards))


def key_ranges(recipe: Recipe, ws: Workspace) -> int:
    """Key ranges per band (and pair slices for verify): one per `bucket_unit_docs` documents in the corpus."""
    return _ranges(corpus_docs(recipe, ws), recipe.corpus.dedup.bucket_unit_docs)


def _ranges(docs: int, unit_docs: int) -> int:
    return max(1, math.ceil(docs / unit_docs))


pair_slices = key_ranges  # verify slices the pair space as finely as the buckets phase slices the keys


def slice_of(pairs: np.ndarray, slices: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = mix64(pairs[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ pairs[:, 1])
    return (h % np.uint64(slices)).astype(np.int64)
