"""Peak memory of one dedup task as the corpus grows 1x, 4x, 16x (it must not grow with the whole corpus).

    python benchmarks/dedup_memory.py [--base ../shared/data/prose/aozora_pd9_plain.jsonl.gz] [--chars 3000]
                                      [--scales 1 4 16] [--docs-per-shard 350] [--keep DIR]

The 1x corpus is the shared Aozora prose (each text cut to --chars characters); a k-x corpus adds k-1 perturbed
copies of every document, written at run time under a temp folder (nothing is copied into the repository):
odd copies are near duplicates (2% of characters replaced), even copies are different documents (paragraphs
shuffled, 30% of characters replaced). Shards hold a fixed number of documents, so the number of shards (and of
tasks) grows with the corpus; `bucket_unit_docs` is set to the 1x document count, so the buckets phase gets more
key ranges as the corpus grows (contain units range the sampled shingles: ~94 per 3000-character document, so
there are ~94x as many contain units as band ranges here, each with ~1x-document-count samples). The filter pass is skipped: the filtered shards are written directly in the
format the corpus stage's run_shard writes (the dedup phases' input).

Tasks run in spawned worker processes (nothing inherited from this script); each resets the peak-RSS mark
(VmHWM) before it starts and reports it when it ends. Printed per scale and phase: tasks, the largest task's peak
RSS, the same minus an idle worker's (imports only), the summed task time and task CPU time (user + system: the
steadier figure when other work shares the machine), and the bytes the phase wrote per doc.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"


def _reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0): each task measures only itself.
    (ru_maxrss cannot: it carries the parent's peak across fork and exec.)"""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _idle(_: int) -> float:
    from kamado.corpus.dedup import phases  # noqa: F401  (the imports every task pays)

    _reset_peak()
    return _peak_mb()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _task(args: tuple) -> tuple[float, float, float]:
    name, recipe, task, num_tasks = args
    from kamado.corpus.dedup import run_phase
    from kamado.stage import Workspace

    _reset_peak()
    cpu = _cpu_s()
    stats = run_phase(name, recipe, Workspace(recipe), task, num_tasks)
    return _peak_mb(), stats["seconds"], _cpu_s() - cpu  # CPU time: steadier than task time on a shared machine


def perturb(text: str, rng: random.Random, rate: float, shuffle: bool) -> str:
    if shuffle:
        paras = text.split("\n")
        rng.shuffle(paras)
        text = "\n".join(paras)
    chars = list(text)
    for i in rng.sample(range(len(chars)), int(len(chars) * rate)):
        chars[i] = rng.choice(KANA)
    return "".join(chars)


def write_corpus(base: list[str], scale: int, folder: Path, docs_per_shard: int, overrides: list[str]):
    from kamado.corpus.dedup.layout import write_filtered
    from kamado.recipe import load_recipe

    rng = random.Random(scale)
    docs = []
    for copy in range(scale):
        for i, text in enumerate(base):
            if copy == 0:
                docs.append(text)
            else:
                docs.append(perturb(text, rng, 0.02, False) if copy % 2 else perturb(text, rng, 0.30, True))
    num_shards = max(1, -(-len(docs) // docs_per_shard))
    (folder / "r.yaml").write_text(
        "name: mem\nworkdir: run\nstages: [corpus]\ncorpus:\n  sources: [{name: m, paths: [unused.jsonl]}]\n", encoding="utf-8")
    recipe = load_recipe(folder / "r.yaml", [f"corpus.num_shards={num_shards}", "corpus.dedup.near=true",
                                              f"corpus.dedup.bucket_unit_docs={len(base)}", *overrides])
    work = Path(recipe.workdir) / "corpus" / "work"
    work.mkdir(parents=True, exist_ok=True)
    for shard in range(num_shards):  # the format run_shard writes: what the dedup phases read
        with write_filtered(work / f"filtered-{shard:05d}.jsonl.zst") as fh:
            for i in range(shard, len(docs), num_shards):
                fh.write(json.dumps({"id": f"d{i}", "text": docs[i], "meta": {"source": "m", "order": [0, 0, i]}},
                                    ensure_ascii=False) + "\n")
        (work / f"filtered-{shard:05d}.done.json").write_text("{}")
    return recipe, len(docs), sum(map(len, docs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(ROOT.parent / "shared" / "data" / "prose" / "aozora_pd9_plain.jsonl.gz"))
    ap.add_argument("--chars", type=int, default=3000, help="cut each base text to this many characters")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--docs-per-shard", type=int, default=350)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", default=None, help="keep the work folders here instead of a temp folder")
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides, e.g. corpus.dedup.containment=false")
    args = ap.parse_args()
    if not Path(args.base).is_file():
        sys.exit(f"{args.base}: not found (the shared prose data set is needed)")
    with gzip.open(args.base, "rt", encoding="utf-8") as fh:
        base = [d["text"][: args.chars] for d in map(json.loads, fh) if len(d["text"]) > 200]
    from kamado.corpus.dedup import PHASES, num_tasks_for
    from kamado.corpus.dedup.layout import dedup_dir
    from kamado.stage import Workspace

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        idle = pool.map(_idle, [0])[0]
    print(f"base: {len(base)} documents of <= {args.chars} chars; idle worker (imports only): {idle:.0f} MB peak RSS")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kamado-dedup-mem-") as tmp:
        root = Path(args.keep or tmp)
        for scale in args.scales:
            folder = root / f"x{scale}"
            folder.mkdir(parents=True, exist_ok=True)
            recipe, ndocs, nchars = write_corpus(base, scale, folder, args.docs_per_shard, args.set)
            ws = Workspace(recipe)
            for name in PHASES:
                n = num_tasks_for(name, recipe, ws)
                start = time.perf_counter()
                with ctx.Pool(args.workers) as pool:
                    results = pool.map(_task, [(name, recipe, t, n) for t in range(n)], chunksize=1)
                peaks = [r[0] for r in results]
                task_seconds = sum(r[1] for r in results)
                cpu_seconds = sum(r[2] for r in results)
                seconds = time.perf_counter() - start
                sub = {"signatures": "sig", "buckets": "buckets", "verify": "verify", "clusters": "clusters",
                       "apply": "apply"}[name]
                written = sum(p.stat().st_size for p in (dedup_dir(ws) / sub).glob("*"))
                if name == "apply":
                    written += sum(p.stat().st_size for p in (ws.stage_dir("corpus") / "data").glob("*"))
                rows.append({"scale": scale, "docs": ndocs, "chars": nchars, "phase": name, "tasks": n,
                             "peak_rss_mb": round(max(peaks), 1), "above_idle_mb": round(max(peaks) - idle, 1),
                             "wall_s": round(seconds, 2), "task_s": round(task_seconds, 2), "cpu_s": round(cpu_seconds, 2),
                             "bytes_per_doc": round(written / ndocs, 1)})
                r = rows[-1]
                print(f"{scale:>3}x {ndocs:>7,} docs {name:<11} {n:>4} tasks  peak {r['peak_rss_mb']:>7.1f} MB "
                      f"(+{r['above_idle_mb']:.1f} over idle)  tasks {task_seconds:>6.1f}s cpu {cpu_seconds:>6.1f}s (wall {seconds:.1f}s)  "
                      f"{r['bytes_per_doc']:>8.1f} B/doc written")
            summary = json.loads((dedup_dir(ws) / "clusters" / "summary.done.json").read_text())["stats"]
            print(f"     removed {summary['removed']}, clusters {summary['clusters']}, largest {summary['largest_cluster']}")
    _table(rows, args.scales, "peak RSS MB (tasks)", lambda r: f"{r['peak_rss_mb']:.0f} ({r['tasks']})")
    _table(rows, args.scales, "task s / CPU s", lambda r: f"{r['task_s']:.1f} / {r['cpu_s']:.1f}")


def _table(rows: list[dict], scales: list[int], what: str, cell) -> None:
    """One markdown table: a row per phase, a column per scale, `cell(row)` in each."""
    from kamado.corpus.dedup import PHASES
    print("\n| phase | " + " | ".join(f"{s}x {what}" for s in scales) + " |")
    print("|---|" + "---|" * len(scales))
    for name in PHASES:
        cells = [next(cell(r) for r in rows if r["scale"] == s and r["phase"] == name) for s in scales]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
