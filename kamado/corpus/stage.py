"""The corpus stage: sharded filtering, then a global exact-dedup pass, then the report.

Phase 1 (`run_shard`, one per shard, in a process pool or a Slurm array task): read the shard's records,
normalize, apply the quality rules, mask personal information, hash the normalized text; write
`work/filtered-SSSSS.jsonl.gz` and a per-shard done-marker, so a rerun does only the missing shards.
Phase 2 (`finish`): keep the first document of each text hash (in input order), write
`data/shard-SSSSS.jsonl.gz`, `report.json` and `summary.txt`. Invariant: docs in = kept + Σ dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from kamado.corpus.filters import apply_filters, build_filters
from kamado.corpus.normalize import normalize
from kamado.corpus.pii import mask_pii
from kamado.corpus.readers import read_jsonl
from kamado.recipe import Recipe, expand_paths
from kamado.stage import StageResult, Workspace, write_json_atomic


def _work(ws: Workspace) -> Path:
    return ws.stage_dir("corpus") / "work"


def _shard_name(shard: int) -> str:
    return f"{shard:05d}"


def run_shard(recipe: Recipe, ws: Workspace, shard: int, num_shards: int) -> dict:
    """Filter one shard: records whose running index (over all sources, in order) ≡ shard mod num_shards."""
    cfg = recipe.corpus
    work = _work(ws)
    work.mkdir(parents=True, exist_ok=True)
    done_path = work / f"filtered-{_shard_name(shard)}.done.json"
    if done_path.is_file():
        return json.loads(done_path.read_text())
    filters = build_filters(cfg.rules)
    stats = {"docs_in": 0, "chars_in": 0, "kept": 0, "chars_kept": 0, "dropped": Counter(), "pii_masked": Counter(), "per_source": {}}
    out_path = work / f"filtered-{_shard_name(shard)}.jsonl.gz"
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    index = -1
    with gzip.open(tmp_path, "wt", encoding="utf-8") as out:
        for source_idx, source in enumerate(cfg.sources):
            per_source = stats["per_source"].setdefault(source.name, {"docs_in": 0, "kept": 0})
            for file_idx, path in enumerate(expand_paths(source.paths)):
                for loc, doc in read_jsonl(path, source.text_field, source.id_field, source.name):
                    index += 1
                    if index % num_shards != shard:
                        continue
                    stats["docs_in"] += 1
                    stats["chars_in"] += len(doc["text"])
                    per_source["docs_in"] += 1
                    doc["text"] = normalize(doc["text"], cfg.nfkc)
                    reason = apply_filters(filters, doc)
                    if reason:
                        stats["dropped"][reason] += 1
                        continue
                    if cfg.mask_pii:
                        doc["text"], masked = mask_pii(doc["text"])
                        stats["pii_masked"].update(masked)
                        if masked:
                            doc["meta"]["pii_masked"] = masked
                    doc["meta"]["order"] = [source_idx, file_idx, loc.line]
                    doc["meta"]["text_hash"] = hashlib.sha1(doc["text"].encode("utf-8")).hexdigest()
                    out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                    stats["kept"] += 1
                    stats["chars_kept"] += len(doc["text"])
                    per_source["kept"] += 1
    os.replace(tmp_path, out_path)
    stats["dropped"] = dict(stats["dropped"])
    stats["pii_masked"] = dict(stats["pii_masked"])
    write_json_atomic(done_path, stats)
    return stats


def _read_gz_jsonl(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def finish(recipe: Recipe, ws: Workspace, num_shards: int) -> StageResult:
    """Global exact dedup over all filtered shards, final shards, report."""
    cfg = recipe.corpus
    folder = ws.stage_dir("corpus")
    work = _work(ws)
    shard_stats = []
    for shard in range(num_shards):
        done = work / f"filtered-{_shard_name(shard)}.done.json"
        if not done.is_file():
            raise RuntimeError(f"corpus shard {shard} of {num_shards} is not done ({done} missing)")
        shard_stats.append(json.loads(done.read_text()))

    # Exact dedup: the first document of each hash in input order wins, wherever its shard is.
    first_of: dict[str, tuple] = {}
    if cfg.exact_dedup:
        for shard in range(num_shards):
            for doc in _read_gz_jsonl(work / f"filtered-{_shard_name(shard)}.jsonl.gz"):
                key, order = doc["meta"]["text_hash"], tuple(doc["meta"]["order"])
                if key not in first_of or order < first_of[key][0]:
                    first_of[key] = (order, doc["id"])

    dropped: Counter = Counter()
    for s in shard_stats:
        dropped.update(s["dropped"])
    data = folder / "data"
    data.mkdir(exist_ok=True)
    kept = chars_out = 0
    duplicates: list[dict] = []
    kept_per_source: Counter = Counter()
    for shard in range(num_shards):
        out_path = data / f"shard-{_shard_name(shard)}.jsonl.gz"
        tmp = out_path.with_name(out_path.name + ".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as out:
            for doc in _read_gz_jsonl(work / f"filtered-{_shard_name(shard)}.jsonl.gz"):
                if cfg.exact_dedup:
                    order, winner = first_of[doc["meta"]["text_hash"]]
                    if tuple(doc["meta"]["order"]) != order:
                        dropped["exact_duplicate"] += 1
                        duplicates.append({"id": doc["id"], "duplicate_of": winner})
                        continue
                out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                kept += 1
                chars_out += len(doc["text"])
                kept_per_source[doc["meta"]["source"]] += 1
        os.replace(tmp, out_path)

    docs_in = sum(s["docs_in"] for s in shard_stats)
    if docs_in == 0:
        raise RuntimeError("corpus: the sources hold no document")
    if kept == 0:
        raise RuntimeError(f"corpus: every one of {docs_in} documents was dropped ({dict(dropped)}); loosen corpus.rules")
    per_source = {}
    for s in shard_stats:
        for name, v in s["per_source"].items():
            per_source.setdefault(name, {"docs_in": 0})["docs_in"] += v["docs_in"]
    for name in per_source:
        per_source[name]["kept"] = kept_per_source[name]
    pii: Counter = Counter()
    for s in shard_stats:
        pii.update(s["pii_masked"])
    report = {
        "docs_in": docs_in,
        "docs_kept": kept,
        "docs_dropped": sum(dropped.values()),
        "dropped": dict(sorted(dropped.items())),
        "chars_in": sum(s["chars_in"] for s in shard_stats),
        "chars_out": chars_out,
        "pii_masked": dict(pii),
        "per_source": per_source,
        "rules": {**vars(cfg.rules), "nfkc": cfg.nfkc, "mask_pii": cfg.mask_pii, "exact_dedup": cfg.exact_dedup},
        "sources": [{"name": s.name, "paths": s.paths} for s in cfg.sources],
        "num_shards": num_shards,
    }
    assert report["docs_in"] == report["docs_kept"] + report["docs_dropped"], report  # the corpus invariant
    write_json_atomic(folder / "report.json", report)
    write_json_atomic(folder / "duplicates.json", duplicates)
    (folder / "summary.txt").write_text(_summary(report), encoding="utf-8")
    return StageResult(
        counts={"docs_in": docs_in, "docs_kept": kept, "docs_dropped": report["docs_dropped"], "chars_out": chars_out},
        outputs=["data", "report.json", "summary.txt", "duplicates.json"],
    )


def _summary(report: dict) -> str:
    lines = [
        f"documents read     {report['docs_in']:>10,}",
        f"documents kept     {report['docs_kept']:>10,}",
        f"documents dropped  {report['docs_dropped']:>10,}",
    ]
    for reason, n in report["dropped"].items():
        lines.append(f"  {reason:<24}{n:>8,}")
    lines.append(f"characters in/out  {report['chars_in']:,} / {report['chars_out']:,}")
    for kind, n in report["pii_masked"].items():
        lines.append(f"masked {kind:<12}{n:>8,}")
    return "\n".join(lines) + "\n"


def _shard_task(args: tuple) -> dict:
    recipe, shard, num_shards = args
    return run_shard(recipe, Workspace(recipe), shard, num_shards)


def run(recipe: Recipe, ws: Workspace) -> StageResult:
    n = recipe.corpus.num_shards
    workers = max(1, min(recipe.corpus.workers, n))
    tasks = [(recipe, shard, n) for shard in range(n)]
    if workers == 1:
        for t in tqdm(tasks, desc="corpus shards", unit="shard"):
            _shard_task(t)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(tqdm(pool.map(_shard_task, tasks), total=n, desc="corpus shards", unit="shard"))
    return finish(recipe, ws, n)
