"""Phases 4 and 5. clusters: one task, connected components over the verified edges (documents with an edge only),
one keeper per cluster (the first in input order), contained documents resolved, a removal list per shard.
apply: one task per group of filter shards, the kept lines copied into the final data shards, with the counts
and the duplicates.json entries the report reads (`apply_results`, `clusters_summary`)."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from typing import Iterator

import numpy as np

from kamado.corpus.dedup import clusters as cl
from kamado.corpus.dedup.gzip_out import open_gzip_writer
from kamado.corpus.dedup.items import pair_slices
from kamado.corpus.dedup.layout import data_path, dedup_dir, filtered_lines, filtered_path, gather, sig_of, split_gids
from kamado.corpus.dedup.store import CorruptInput, Outputs, is_done, write_outputs
from kamado.durable import fsync_dir, fsync_file
from kamado.recipe import Recipe
from kamado.stage import Workspace

DROP_REASONS = {cl.EXACT: "exact_duplicate", cl.NEAR: "near_duplicate", cl.CONTAINED: "contained_duplicate"}


# ---------------------------------------------------------------- clusters
def clusters_item(recipe: Recipe, ws: Workspace, item: int) -> dict | None:
    folder = dedup_dir(ws) / "clusters"
    if is_done(folder, "summary"):
        return None
    edges, kinds, sims = [], [], []
    for v in range(pair_slices(recipe, ws)):
        out = Outputs(dedup_dir(ws) / "verify", f"{v:05d}", "verify")
        edges.append(out.array("edges"))
        kinds.append(out.array("kinds"))
        sims.append(out.array("sims"))
    cache: dict = {}

    def info(nodes: np.ndarray):
        return (gather(recipe, ws, "order", nodes, cache), gather(recipe, ws, "exact", nodes, cache),
                gather(recipe, ws, "size", nodes, cache))

    removal = cl.cluster(np.concatenate(edges).reshape(-1, 2), np.concatenate(kinds), np.concatenate(sims), info)
    # Resolve the ids of the kept and the directly matched documents, one shard's id list at a time.
    kept_ids, matched_ids = _ids_of(ws, removal.kept), _ids_of(ws, removal.duplicate_of)
    rm_shard, rm_row = split_gids(removal.gid)
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
    shards, rows = split_gids(gids)
    out = np.empty(len(gids), dtype=object)
    for shard in np.unique(shards):
        ids = sig_of(ws, int(shard)).json("ids")
        sel = np.flatnonzero(shards == shard)
        out[sel] = [ids[r] for r in rows[sel]]
    return out


# ---------------------------------------------------------------- apply
def apply_item(recipe: Recipe, ws: Workspace, shard: int) -> dict | None:
    folder, name = dedup_dir(ws) / "apply", f"{shard:05d}"
    if is_done(folder, name):
        return None
    sig = sig_of(ws, shard)
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
        for row, line in enumerate(filtered_lines(ws, shard)):
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
    fsync_file(tmp)  # the tokenizer stage trusts this shard: its bytes are on disk before its name
    tmp.replace(out_path)
    fsync_dir(out_path.parent)
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
