"""Scale on paper: the dedup phases' per-document costs measured on the shared Japanese text, extrapolated to 1 TB.

    python benchmarks/dedup_scale.py [--data ../shared/data] [--terabytes 1] [--shard-docs 250000] [--json out.json]
                                     [--from-json out.json]   # the table again from saved measurements

Measurement corpus: every document of the shared web and prose text files (`text` field: ABEJA-CC sample, KWDLC
leads, Aozora prose, JaQuAD Wikipedia paragraphs, Wikipedia leads; the Debian/LilyPond pages are HTML sources,
not text, and are left out). Its mean UTF-8 size per document converts 1 TB into a document count N.

Four runs of the real phases over that corpus, each task in a spawned worker that resets its peak-RSS mark
(VmHWM) and reports its peak RSS, its CPU seconds (user + system: time per core) and its input size:
    A / C  containment on / off,  2 shards, 1 key range  (big tasks)
    B / D  containment on / off, 16 shards, 4 key ranges (tasks 4-8x smaller)
Memory per task is fitted as idle + fixed + slope x input over the tasks of A and B (C and D for containment
off), input being: documents of its shard (signatures, apply), entries of its unit (buckets: one per document for
an exact or band unit, one per sampled shingle for a contain unit), candidate pairs of its slice (verify). The
signatures tasks run with a small shingle batch so the slope is per document; the recipe's batch (bounded) is
added back. Clusters (one task; this corpus has few duplicates) is measured on its own: clustering 250k and 1M
synthetic documents with edges gives its cost per document with an edge. Disk is what each phase writes per
document; time is CPU seconds per document. All scale with N except what depends on the duplicate rate
(candidate pairs, documents with an edge), taken as measured on this corpus and stated.

At N documents with the recipe's settings (20 bands x 10 rows, 5-grams, bucket_unit_docs 4M): signatures and apply
run N / shard_docs tasks; buckets runs R = ceil(N / bucket_unit_docs) key ranges for exact, each band, and contain;
verify runs R slices; clusters one task. Nothing is copied into the repository: shards are written to a temp folder.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing as mp
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from dedup_memory import _idle, _peak_mb, _reset_peak  # noqa: E402  (the same VmHWM measurement)

FILES = ["web/abeja_cc_ja_sample_99docs.jsonl.gz", "web/kwdlc_web_document_leads.jsonl.gz",
         "prose/aozora_pd9_plain.jsonl.gz", "prose/jaquad_train_wikipedia_paragraphs.jsonl.gz",
         "prose/wikipedia_annotated_corpus_leads.jsonl.gz"]
MEASURE_BATCH = 100_000
SUBDIR = {"signatures": "sig", "buckets": "buckets", "verify": "verify", "clusters": "clusters", "apply": "apply"}


def _task(args: tuple) -> dict:
    name, recipe, task, num_tasks = args
    from kamado.corpus.dedup import run_phase, signatures
    from kamado.stage import Workspace

    # A small shingle batch, so that the fitted per-document memory of signatures is not the batch (bounded:
    # two batches of BATCH_SHINGLES x 8 B, one hashed and one built, added back when extrapolating).
    signatures.BATCH_SHINGLES = MEASURE_BATCH
    _reset_peak()
    before = resource.getrusage(resource.RUSAGE_SELF)
    run_phase(name, recipe, Workspace(recipe), task, num_tasks)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"task": task, "peak_mb": _peak_mb(), "cpu_s": cpu}


def _cluster_probe(nodes: int) -> float:
    """Peak MB above the worker's start of clustering `nodes` documents (random clusters of 2..5, near edges):
    the clusters phase's cost per document with an edge, which this corpus has too few of to fit."""
    from kamado.corpus.dedup import clusters as cl

    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(nodes, dtype=np.uint64) + np.uint64(1 << 32))
    size = rng.integers(2, 6, nodes // 2)
    label = np.repeat(np.arange(len(size)), size)[:nodes]
    first = np.concatenate([[0], np.cumsum(size)])[label]
    edges = np.stack([ids[first], ids[: len(label)]], axis=1)[np.arange(len(label)) != first]
    kinds = np.full(len(edges), cl.NEAR, np.int8)
    sims = np.full(len(edges), 0.9)

    def info(n):
        k = len(n)
        return (np.stack([np.zeros(k, np.int64), np.zeros(k, np.int64), np.arange(k)], axis=1),
                rng.integers(0, 2**63, (k, 2), dtype=np.uint64), rng.integers(10, 1000, k).astype(np.uint32))

    _reset_peak()
    start = _peak_mb()
    cl.cluster(edges, kinds, sims, info)
    return _peak_mb() - start


def file_texts(data: Path, rel: str) -> list[str]:
    """The non-empty `text` fields of one shared file (exits with a message when it is absent)."""
    path = data / rel
    if not path.is_file():
        sys.exit(f"{path}: not found (the shared web/prose data is needed)")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [d["text"] for d in map(json.loads, fh) if d.get("text")]


def load_docs(data: Path) -> tuple[list[str], dict]:
    texts, per_file = [], {}
    for rel in FILES:
        part = file_texts(data, rel)
        size = sum(len(t.encode("utf-8")) for t in part)
        per_file[rel] = {"docs": len(part), "bytes": size, "mean_bytes": round(size / len(part)),
                         "bytes_per_char": round(size / sum(map(len, part)), 2)}
        texts += part
    return texts, per_file


def write_corpus(texts: list[str], folder: Path, num_shards: int, ranges: int, contain: bool):
    from kamado.corpus.dedup.layout import write_filtered
    from kamado.recipe import load_recipe

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "r.yaml").write_text(
        "name: scale\nworkdir: run\nstages: [corpus]\ncorpus:\n  sources: [{name: s, paths: [unused.jsonl]}]\n",
        encoding="utf-8")
    recipe = load_recipe(folder / "r.yaml", [f"corpus.num_shards={num_shards}", "corpus.dedup.near=true",
                                              f"corpus.dedup.containment={str(contain).lower()}",
                                              f"corpus.dedup.bucket_unit_docs={math.ceil(len(texts) / ranges)}"])
    work = Path(recipe.workdir) / "corpus" / "work"
    work.mkdir(parents=True, exist_ok=True)
    for shard in range(num_shards):  # the format run_shard writes: the dedup phases' input
        with write_filtered(work / f"filtered-{shard:05d}.jsonl.zst") as fh:
            for i in range(shard, len(texts), num_shards):
                fh.write(json.dumps({"id": f"d{i}", "text": texts[i], "meta": {"source": "s", "order": [0, 0, i]}},
                                    ensure_ascii=False) + "\n")
        (work / f"filtered-{shard:05d}.done.json").write_text("{}")
    return recipe


def run(label: str, texts: list[str], folder: Path, num_shards: int, ranges: int, contain: bool, idle: float) -> dict:
    """Every phase, task by task; per task: peak above idle, CPU seconds, input size, kind (buckets units)."""
    from kamado.corpus.dedup import PHASES, num_tasks_for
    from kamado.corpus.dedup.items import bucket_units, unit_name
    from kamado.corpus.dedup.layout import dedup_dir
    from kamado.corpus.dedup.store import Outputs
    from kamado.stage import Workspace

    recipe = write_corpus(texts, folder, num_shards, ranges, contain)
    ws = Workspace(recipe)
    ctx = mp.get_context("spawn")
    out = {"label": label, "shards": num_shards, "ranges": ranges, "contain": contain, "phases": {}}
    for name in PHASES:
        n = num_tasks_for(name, recipe, ws)
        with ctx.Pool(2) as pool:
            results = pool.map(_task, [(name, recipe, t, n) for t in range(n)], chunksize=1)
        d = dedup_dir(ws)
        tasks = []
        for r in results:
            t = r["task"]
            if name in ("signatures", "apply"):
                size, kind = Outputs(d / "sig", f"{t:05d}", "signatures").stats["docs"], name
            elif name == "buckets":
                unit = bucket_units(recipe, ws)[t]
                size, kind = Outputs(d / "buckets", unit_name(unit), "buckets").stats["entries"], unit[0]
            elif name == "verify":
                st = Outputs(d / "verify", f"{t:05d}", "verify").stats
                size, kind = st.get("exact_pairs", 0) + st.get("candidate_pairs", 0) + st.get("containment_pairs_seen", 0), name
            else:
                size, kind = Outputs(d / "clusters", "summary", "clusters").stats["docs_in_clusters"], name
            tasks.append({"kind": kind, "input": int(size), "above_idle_mb": r["peak_mb"] - idle, "cpu_s": r["cpu_s"]})
        written = {}
        for p in (d / SUBDIR[name]).glob("*"):  # buckets: per unit kind (exact, band, contain); others: all
            key = next((k for k in ("exact", "band", "contain") if p.name.startswith(k)), "all")
            written[key] = written.get(key, 0) + p.stat().st_size
        if name == "apply":
            written["data shards"] = sum(p.stat().st_size for p in (ws.stage_dir("corpus") / "data").glob("*"))
        out["phases"][name] = {"tasks": tasks, "written": written}
        print(f"  {label}: {name:<10} {n:>3} tasks, peak above idle {max(t['above_idle_mb'] for t in tasks):6.1f} MB, "
              f"cpu {sum(t['cpu_s'] for t in tasks):6.1f} s, wrote {sum(written.values()) / len(texts):8.1f} B/doc",
              flush=True)
    summary = Outputs(dedup_dir(ws) / "clusters", "summary", "clusters").stats
    out["docs_in_clusters"] = summary["docs_in_clusters"]
    out["removed"] = summary["removed"]
    sig_stats = [Outputs(dedup_dir(ws) / "sig", f"{s:05d}", "signatures") for s in range(num_shards)]
    out["samples"] = sum(len(o.mapped("frac_keys")) for o in sig_stats) if contain else 0
    return out


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(fixed MB, MB per input unit), least squares, slope kept >= 0; one distinct input: slope from the origin."""
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    if len(np.unique(x)) < 2:
        return 0.0, float(y.max() / max(x.max(), 1))
    slope, fixed = np.polyfit(x, y, 1)
    return float(max(fixed, 0.0)), float(max(slope, 0.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--terabytes", type=float, default=1.0)
    ap.add_argument("--shard-docs", type=int, default=250_000, help="documents per filter shard at scale")
    ap.add_argument("--bucket-unit-docs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--json", default=None, help="write the measurements and the table here")
    ap.add_argument("--from-json", default=None, help="skip the measurements: extrapolate those of an earlier --json")
    args = ap.parse_args()
    from kamado.corpus.config import DedupConfig

    cfg = DedupConfig()
    unit_docs = args.bucket_unit_docs or cfg.bucket_unit_docs
    texts, per_file = load_docs(Path(args.data))
    total_bytes = sum(v["bytes"] for v in per_file.values())
    mean = total_bytes / len(texts)
    N = int(args.terabytes * 1e12 / mean)
    print(f"measurement corpus: {len(texts):,} documents, {total_bytes / 1e6:.1f} MB of UTF-8 text, mean {mean:,.0f} B/doc")
    for rel, v in per_file.items():
        print(f"  {rel}: {v['docs']:,} docs, mean {v['mean_bytes']:,} B/doc, {v['bytes_per_char']} B/char")
    print(f"conversion: {args.terabytes:g} TB / {mean:,.0f} B per doc = {N / 1e6:,.0f}M documents "
          f"(the issue's ~400M is 2,500 B/doc)")
    print(f"settings: {cfg.bands}x{cfg.rows} bands, {cfg.ngram}-grams, {cfg.num_perm} perms, containment scale "
          f"{cfg.containment_scale}, bucket_unit_docs {unit_docs:,}, {args.shard_docs:,} docs per shard")
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        runs, idle, probe = saved["runs"], saved["idle_mb"], saved["cluster_probe_mb"]
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            idle = pool.map(_idle, [0])[0]
        runs = {}
        with tempfile.TemporaryDirectory(prefix="kamado-dedup-scale-") as tmp:
            for label, shards, ranges, contain in (("A", 2, 1, True), ("B", 16, 4, True), ("C", 2, 1, False),
                                                   ("D", 16, 4, False)):
                runs[label] = run(label, texts, Path(tmp) / label, shards, ranges, contain, idle)
        with ctx.Pool(1) as pool:
            probe = pool.map(_cluster_probe, [250_000, 1_000_000])
    per_node_mb = (probe[1] - probe[0]) / 750_000
    print(f"clusters: {probe[0]:.0f} MB for 250k documents with an edge, {probe[1]:.0f} MB for 1M: "
          f"{per_node_mb * 1e6:.0f} B per document")
    n_meas = len(texts)
    R = math.ceil(N / unit_docs)
    shards = math.ceil(N / args.shard_docs)
    rows = []
    slopes: dict = {}
    for contain, labels in ((True, ("A", "B")), (False, ("C", "D"))):
        ref = runs[labels[-1]]
        samples_per_doc = ref["samples"] / n_meas
        for name in ("signatures", "buckets", "verify", "clusters", "apply"):
            kinds = sorted({t["kind"] for lab in labels for t in runs[lab]["phases"][name]["tasks"]})
            for kind in kinds:
                pts = [(t["input"], t["above_idle_mb"]) for lab in labels for t in runs[lab]["phases"][name]["tasks"]
                       if t["kind"] == kind]
                fixed, slope = fit(pts)
                borrowed = name == "verify" and max(x for x, _ in pts) < 20_000 and (name, kind) in slopes
                if borrowed:  # too few inputs here to fit a slope (e.g. pairs without containment): the other runs'
                    fixed, slope = max(y for _, y in pts), slopes[(name, kind)]
                slopes.setdefault((name, kind), slope)
                cpu = sum(t["cpu_s"] for t in ref["phases"][name]["tasks"] if t["kind"] == kind)
                if name == "signatures":  # + the recipe's shingle batch, bounded (a small one was measured)
                    from kamado.corpus.dedup.signatures import BATCH_SHINGLES
                    fixed += 2 * (BATCH_SHINGLES - MEASURE_BATCH) * 8 / 1e6
                if name in ("signatures", "apply"):
                    tasks, unit_input = shards, min(args.shard_docs, N)
                elif name == "buckets" and kind == "contain":  # contain units range the samples, not the documents
                    tasks = math.ceil(samples_per_doc * N / unit_docs)
                    unit_input = samples_per_doc * N / tasks
                elif name == "buckets":
                    tasks = R * (cfg.bands if kind == "band" else 1)
                    unit_input = N / R
                elif name == "verify":
                    tasks = R
                    pairs = sum(t["input"] for t in ref["phases"][name]["tasks"]) / n_meas
                    unit_input = pairs * N / R
                else:  # the synthetic probe's cost per node + one shard's ids (apply's cost per document)
                    tasks = 1
                    unit_input = ref["docs_in_clusters"] / n_meas * N
                    fixed, slope = max(y for _, y in pts), per_node_mb
                written = ref["phases"][name]["written"]
                if name == "buckets":
                    disk = written.get(kind, 0)
                else:
                    disk = sum(v for k, v in written.items() if k != "data shards")
                rows.append({
                    "containment": contain, "tasks": tasks,
                    "phase": (name if name != "buckets" else f"buckets ({kind})") + (" †" if borrowed else ""),
                    "input_per_task": unit_input, "mem_mb": idle + fixed + slope * unit_input,
                    "fixed_mb": fixed, "mb_per_million_input": slope * 1e6,
                    "disk_gb": disk / n_meas * N / 1e9, "disk_b_per_doc": disk / n_meas,
                    "cpu_us_per_doc": cpu / n_meas * 1e6, "core_hours": cpu / n_meas * N / 3600,
                })
    print(f"\nN = {N / 1e6:,.0f}M documents ({args.terabytes:g} TB at {mean:,.0f} B/doc), R = {R} key ranges, "
          f"{shards} shards; idle worker {idle:.0f} MB; duplicates measured here: "
          f"{runs['B']['docs_in_clusters'] / n_meas:.2%} of documents in a cluster, "
          f"{runs['B']['samples'] / n_meas:.1f} containment samples per document")
    print("\n| containment | phase | tasks | input per task | memory per task | fitted MB per 1M input | disk B/doc | disk "
          "at N | CPU µs/doc | core-hours at N |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {'on' if r['containment'] else 'off'} | {r['phase']} | {r['tasks']:,} | {r['input_per_task']:,.0f} | "
              f"{r['mem_mb']:,.0f} MB | {r['mb_per_million_input']:,.1f} (+{r['fixed_mb']:.0f}) | {r['disk_b_per_doc']:,.0f} | "
              f"{r['disk_gb']:,.0f} GB | {r['cpu_us_per_doc']:,.0f} | {r['core_hours']:,.0f} |")
    print("†: slope per candidate pair from the containment-on runs (too few pairs without containment to fit one)")
    for r in rows:
        if r["phase"] == "clusters":
            at30 = idle + r["fixed_mb"] + r["mb_per_million_input"] * 0.30 * N / 1e6
            print(f"clusters with containment {'on' if r['containment'] else 'off'} if 30% of the documents had an edge "
                  f"(a web crawl; measured here: {r['input_per_task'] / N:.2%}): {at30:,.0f} MB")
    for contain in (True, False):
        sel = [r for r in rows if r["containment"] == contain]
        print(f"containment {'on' if contain else 'off'}: total disk {sum(r['disk_gb'] for r in sel):,.0f} GB "
              f"(+ the kept data shards), {sum(r['core_hours'] for r in sel):,.0f} core-hours, largest task "
              f"{max(r['mem_mb'] for r in sel):,.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"per_file": per_file, "N": N, "R": R, "rows": rows, "runs": runs,
                                               "idle_mb": idle, "cluster_probe_mb": probe}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
