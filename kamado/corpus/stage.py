"""The corpus stage: sharded filtering, then global dedup (sharded phases), then the report.

Phase 0 (`kamado.corpus.plan.ensure_plan`): cut the inputs into slices at record boundaries and give each shard
a contiguous run of them, balanced by bytes (`work/plan.json`).
Phase 1 (`run_shard`, one per shard, in a process pool or a Slurm array task): read the shard's slices,
normalize, apply the quality rules, mask personal information, hash the normalized text; write
`work/filtered-SSSSS.jsonl.zst` and a per-shard done-marker, so a rerun does only the missing shards.
Phase 2 (`finish`): kamado.corpus.dedup's phases (signatures → buckets → verify → clusters → apply, each
sharded) keep the first document of each exact/near-duplicate cluster (in input order) and write
`data/shard-SSSSS.jsonl.gz`; then `report.json`, `duplicates.json` and `summary.txt`.
Invariant: docs in = kept + Σ dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from functools import partial
from pathlib import Path

from kamado.corpus import dedup
from kamado.corpus.dedup.layout import HAND_OVER_BYTES, filtered_path, hand_over, write_filtered
from kamado.corpus.dedup.signatures import early_minhash, minhash_input
from kamado.corpus.filters import apply_filters, build_filters
from kamado.corpus.normalize import normalize
from kamado.corpus.plan import ensure_plan
from kamado.corpus.readers import Rejected, iter_source_file
from kamado.corpus.report import CorpusInvariantError, ShardStats, add_cleaning_report, warn_dominant_rules
from kamado.durable import fsync_dir, fsync_file
from kamado.phase_tasks import in_process
from kamado.pipeline import Phase
from kamado.corpus.config import source_rules
from kamado.recipe import Recipe, to_dict
from kamado.stage import StageResult, Workspace, write_json_atomic


def _work(ws: Workspace) -> Path:
    return ws.stage_dir("corpus") / "work"


def _shard_name(shard: int) -> str:
    return f"{shard:05d}"


def shard_done_path(ws: Workspace, shard: int) -> Path:
    """The done-marker `run_shard` writes last: a shard that has it is finished (executors skip such shards)."""
    return _work(ws) / f"filtered-{_shard_name(shard)}.done.json"


def run_shard(recipe: Recipe, ws: Workspace, shard: int, num_shards: int) -> dict:
    """Filter one shard: the slices of the inputs that the stage's plan (kamado.corpus.plan, `work/plan.json`,
    made by the first task that needs it) gives to this shard; the shard opens no other input.

    Every record read ends up kept, dropped by a named rule, or rejected (bad input, written with its file and
    line to `work/rejects-SSSSS.jsonl`); the shard's report (`work/report-SSSSS.json`, also its done-marker)
    holds the counts, and read = kept + Σ dropped + Σ rejected is checked before it is written. Outputs are
    written as temp files, fsynced and renamed, the done-marker last: a shard killed at any point is redone."""
    cfg = recipe.corpus
    work = _work(ws)
    work.mkdir(parents=True, exist_ok=True)
    name = _shard_name(shard)
    done_path = shard_done_path(ws, shard)
    if done_path.is_file():
        return json.loads(done_path.read_text())
    slices = [sl for sl in ensure_plan(recipe, ws, num_shards) if sl.shard == shard]
    # one rule chain per source that this shard reads (sources may override corpus.rules)
    chains = {i: build_filters(source_rules(cfg, i)) for i in sorted({sl.source for sl in slices})}
    stats = ShardStats(cfg.dropped_samples)
    for source in cfg.sources:  # every source is named in every shard's report, read or not
        stats.source(source.name)
    out_path = filtered_path(ws, shard)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    rejects_path = work / f"rejects-{name}.jsonl"
    rejects_tmp = rejects_path.with_name(rejects_path.name + ".tmp")
    handover: list | None = [] if in_process() else None
    early = early_minhash(recipe) if handover is not None else None  # MinHash while filtering, on the other core
    held = 0
    if cfg.mask_pii:
        from kamado.corpus.pii import mask_pii  # its patterns compile at import: only for a corpus that masks PII
    with write_filtered(tmp_path) as out, open(rejects_tmp, "w", encoding="utf-8") as rejects:
        for sl in slices:
            source = cfg.sources[sl.source]
            filters = chains[sl.source]
            records = iter_source_file(sl.path, sl.fmt, source.text_field, source.id_field, source.name,
                                       source.url_field, source.html, cfg.max_record_bytes, part=sl.part)
            for loc, doc in records:
                where = f"{loc.path}:{loc.line}"
                if isinstance(doc, Rejected):
                    stats.read(source.name, 0)
                    stats.drop(source.name, f"rejected:{doc.reason}", None, 0, where)
                    row = {"file": loc.path, "line": loc.line, "source": source.name, "reason": doc.reason,
                           "detail": doc.detail}
                    if doc.offset is not None:
                        row["offset"] = doc.offset
                    rejects.write(json.dumps(row, ensure_ascii=False) + "\n")
                    continue
                stats.read(source.name, len(doc["text"]))
                doc["text"] = normalize(doc["text"], cfg.nfkc, cfg.ja_punctuation, cfg.neologdn)
                reason = apply_filters(filters, doc)
                if "quality_score" in doc["meta"]:
                    stats.score(doc["meta"]["quality_score"])
                if reason:
                    stats.drop(source.name, reason, doc, len(doc["text"]), where)
                    continue
                if cfg.mask_pii:
                    doc["text"], masked = mask_pii(doc["text"])
                    stats.pii.update(masked)
                    if masked:
                        doc["meta"]["pii_masked"] = masked
                doc["meta"]["order"] = [sl.source, sl.file, loc.line]
                doc["meta"]["text_hash"] = hashlib.sha1(doc["text"].encode("utf-8")).hexdigest()
                line = json.dumps(doc, ensure_ascii=False) + "\n"
                out.write(line)
                stats.keep(source.name, len(doc["text"]))
                if handover is not None:  # in-process: signatures gets these without reading the file back
                    raw = line.encode("utf-8")
                    held += len(raw)
                    handover = handover if held <= HAND_OVER_BYTES else None
                    if handover is not None:
                        handover.append((raw, doc))
                        if early is not None:
                            early.add(minhash_input(recipe, doc["text"]))
                    elif early is not None:  # too large to hand over: signatures reads the file and hashes it
                        early.discard()
                        early = None
    for tmp in (tmp_path, rejects_tmp):
        fsync_file(tmp)
    os.replace(tmp_path, out_path)
    if handover is not None:
        hand_over(out_path, handover, early)
    os.replace(rejects_tmp, rejects_path)
    fsync_dir(work)
    report = stats.as_dict()  # asserts read = kept + Σ dropped + Σ rejected for this shard
    write_json_atomic(work / f"report-{name}.json", report)
    write_json_atomic(done_path, report)  # last: the shard counts as done only once everything is written
    return report


def filter_task(recipe: Recipe, ws: Workspace, task: int, num_tasks: int) -> dict:
    """Task `task` of `num_tasks` of the filter phase: shards task, task + num_tasks, ... (done ones skipped)."""
    n = recipe.corpus.num_shards
    stats = {"items": 0, "skipped_done": 0}
    for shard in range(task, n, num_tasks):
        stats["skipped_done"] += shard_done_path(ws, shard).is_file()
        run_shard(recipe, ws, shard, n)
        stats["items"] += 1
    return stats


def _shards(recipe: Recipe, ws: Workspace | None = None) -> int:  # noqa: ARG001
    return recipe.corpus.num_shards


def _filter_workers(recipe: Recipe, ws: Workspace) -> int:
    """corpus.workers, but no more processes than shards with work: a single .gz input is one slice, so one shard
    reads everything and a pool would only add its start-up (the plan is made here, once, as the first task would)."""
    busy = len({sl.shard for sl in ensure_plan(recipe, ws, recipe.corpus.num_shards)})
    return max(1, min(recipe.corpus.workers, busy))


def _dedup_array_tasks(recipe: Recipe, phase: str) -> int:
    """A dedup phase's array size on Slurm, fixed before any phase ran: signatures and apply have one unit per
    filter shard; the units of buckets and verify follow from the documents signatures finds, so those arrays get
    slurm.dedup_tasks tasks (default corpus.num_shards); clusters is one task."""
    later = recipe.slurm.dedup_tasks or recipe.corpus.num_shards
    return {"signatures": recipe.corpus.num_shards, "buckets": later, "verify": later, "clusters": 1,
            "apply": recipe.corpus.num_shards}[phase]


def _dedup_arrays(recipe: Recipe) -> bool:
    """Dedup phases as Slurm job arrays when near dedup or decontamination is on (slurm.dedup_arrays overrides);
    exact dedup alone is one hash per document: the finish job runs the phases itself."""
    d, choice = recipe.corpus.dedup, recipe.slurm.dedup_arrays
    return choice if choice is not None else d.near or bool(d.decontam_paths)


def phases(recipe: Recipe) -> list[Phase]:
    """The corpus stage's work: filter shards (`run_shard`), then the dedup phases (kamado.corpus.dedup)."""
    out = [Phase("filter", _shards, filter_task, _shards, _filter_workers)]
    for name in dedup.PHASES:
        out.append(Phase(name, partial(dedup.num_tasks_for, name), partial(dedup.run_phase, name),
                         partial(_dedup_array_tasks, phase=name), dedup.local_workers, _dedup_arrays))
    return out


def dedup_then_timings(recipe: Recipe, ws: Workspace) -> dict[str, dict]:
    """For scripts that filtered the shards themselves: run the dedup phases here (as the local executor does) and
    return the timings `finish` takes."""
    from kamado.local import run_phases_here
    from kamado.phase_tasks import phase_timings

    sizes = run_phases_here(recipe, ws, "corpus", names=list(dedup.PHASES), log=lambda _: None)
    return phase_timings(ws, "corpus", sizes)


def finish(recipe: Recipe, ws: Workspace, timings: dict[str, dict]) -> StageResult:
    """After every phase: the final shards are written; join the shard reports and the dedup outputs into
    report.json, duplicates.json and summary.txt. `timings`: each phase's {tasks, items, seconds, skipped_done}."""
    dedup.forget_kept_lines()
    cfg = recipe.corpus
    num_shards = cfg.num_shards
    dedup_phases = {name: t for name, t in timings.items() if name in dedup.PHASES}
    folder = ws.stage_dir("corpus")
    shard_stats = []
    for shard in range(num_shards):
        done = shard_done_path(ws, shard)
        if not done.is_file():
            raise RuntimeError(f"corpus shard {shard} of {num_shards} is not done ({done} missing)")
        shard_stats.append(json.loads(done.read_text()))
    warn_dominant_rules(cfg, shard_stats)  # one rule dropping ≥ 90% of a source: say which, before dedup (and any failure)

    # Exact, near and contained duplicates, contamination: each cluster kept its first document in input order.
    dropped: Counter = Counter()
    for s in shard_stats:
        dropped.update(s["dropped"])
    kept = chars_out = 0
    duplicates: list[dict] = []
    kept_per_source: Counter = Counter()
    for applied in dedup.apply_results(ws, num_shards):
        kept += applied.stats["kept"]
        chars_out += applied.stats["chars_out"]
        dropped.update(applied.stats["dropped"])
        kept_per_source.update(applied.stats["kept_per_source"])
        duplicates.extend(applied.json("duplicates"))

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
        "sources": [{"name": s.name, "paths": s.paths, "license": s.license} for s in cfg.sources],
        "num_shards": num_shards,
    }
    report["dedup"] = _dedup_report(recipe, ws, dropped, dedup_phases)
    add_cleaning_report(report, shard_stats, folder, cfg.dropped_samples)  # drops.txt/.png, samples, rejected
    if report["docs_in"] != report["docs_kept"] + report["docs_dropped"]:  # the corpus invariant
        raise CorpusInvariantError(f"corpus counts do not add up: docs_in {report['docs_in']} != kept "
                                   f"{report['docs_kept']} + dropped {report['docs_dropped']}")
    write_json_atomic(folder / "report.json", report)
    write_json_atomic(folder / "duplicates.json", duplicates)
    (folder / "summary.txt").write_text(_summary(report) + _dedup_summary(report["dedup"]), encoding="utf-8")
    return StageResult(
        counts={"docs_in": docs_in, "docs_kept": kept, "docs_dropped": report["docs_dropped"], "chars_out": chars_out},
        outputs=["data", "report.json", "summary.txt", "duplicates.json"],
    )


def _dedup_report(recipe: Recipe, ws: Workspace, dropped: Counter, phases: dict) -> dict:
    """What dedup removed, the cluster sizes, each phase's tasks and time, the settings it ran with."""
    return {
        "exact_removed": dropped.get("exact_duplicate", 0),
        "near_removed": dropped.get("near_duplicate", 0),
        "contained_removed": dropped.get("contained_duplicate", 0),
        "contaminated": dropped.get("contaminated", 0),
        **dedup.clusters_summary(ws),
        "phases": phases,
        "settings": {"exact_dedup": recipe.corpus.exact_dedup, **to_dict(recipe.corpus.dedup)},
    }


def _dedup_summary(d: dict) -> str:
    lines = [f"dedup: {d['exact_removed']:,} exact, {d['near_removed']:,} near, {d['contained_removed']:,} contained "
             f"removed; {d['contaminated']:,} contaminated; {d['clusters']:,} clusters (largest {d['largest_cluster']:,})"]
    for name, p in d["phases"].items():
        lines.append(f"  {name:<12}{p['tasks']:>5} task(s) {p['seconds']:>8.1f}s"
                     + (f"  peak {p['peak_rss_mb']:,.0f} MB per task" if p.get("peak_rss_mb") else ""))
    return "\n".join(lines) + "\n"


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
