"""The whole corpus stage (filter pass + near dedup + report) at 1x / 4x (/ 16x) of the shared web + prose text,
with datatrove's MinHash dedup pipeline side by side on the same documents, extrapolated to 1 TB.

    pip install datatrove    # for this benchmark only; not a kamado dependency
    python benchmarks/corpus_scale.py [--data ../shared/data] [--base-mb 4] [--big] [--slurm] [--json out.json]

Data: documents of the shared web and prose JSONL files (the `text` field of the ABEJA-CC sample, KWDLC leads,
Aozora prose, JaQuAD and Wikipedia paragraphs), taken evenly from each file up to `--base-mb` MB of UTF-8: the 1x
corpus. At k x, copy 0 is the base and copies 1..k-1 are perturbed (odd copies: 2% of the characters replaced, a
near duplicate; even copies: paragraphs shuffled and 30% replaced, new text for MinHash), so dedup has work that
grows with the corpus. Inputs are plain JSONL files, two per shard.

kamado: the recipe's defaults (normalization, PII masking) with `corpus.dedup.near: true`, `num_shards` = 2 x scale and
every quality rule's threshold off (the rules are still computed, but every document reaches dedup, as every
document reaches datatrove's), run the way a Slurm array runs it: every filter shard, then every task of every
dedup phase, each in one of two spawned workers (this machine's cores) that resets its peak-RSS mark (VmHWM) at
the start of each task and reports peak RSS and CPU seconds; then the stage's finish (report) in this process, timed. documents/s per core = documents in /
CPU seconds of all tasks (time per core, steadier than wall time on a shared machine). Disk = everything under the
stage's folder (filter shards, dedup work files, final shards) per input document.

datatrove (0.10): its four MinHash stages (signatures, buckets, clusters, filter + JSONL writer) on the same input
files, same settings as kamado (character 5-grams: a tokenizer that makes every non-space character a word, 20
buckets x 10 hashes, 32-bit hashes), each task in a spawned worker as above (its logs and stats to /dev/null). It does no quality filtering,
so compare it with kamado's dedup phases ("kamado dedup only" rows); the whole stage is shown too.

1 TB: N = 1e12 / (input bytes per document); core-hours = N / (documents/s per core) / 3600, per phase too, using the
largest scale run (per-document costs of the phases here grow at most with the duplicates per document).
`--slurm` also runs `kamado run --executor slurm` on a two-node local cluster (tests/slurm_cluster.py; needs
slurm-wlm + munge) for each scale and prints its wall time and each phase's tasks, time and peak RSS per task (from the
tasks' own records: the test cluster has no accounting).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing as mp
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from dedup_memory import _peak_mb, _reset_peak, perturb  # noqa: E402  (the same VmHWM measurement, perturbation)
from dedup_scale import FILES, file_texts  # noqa: E402  (the same web + prose text files)

WORKERS = 2


# ---------------------------------------------------------------- data
def base_docs(data: Path, base_mb: float) -> list[str]:
    """Documents taken evenly from each file (every k-th) until the file's share of base_mb is reached."""
    texts = []
    for rel in FILES:
        part = file_texts(data, rel)
        budget = base_mb * 1e6 / len(FILES)
        size = sum(len(t.encode("utf-8")) for t in part)
        step = max(1, math.floor(size / budget))
        taken = 0
        for t in part[::step]:
            if taken >= budget:
                break
            texts.append(t)
            taken += len(t.encode("utf-8"))
    return texts


def write_inputs(base: list[str], scale: int, folder: Path, files: int) -> tuple[int, int]:
    """k x the base as `files` JSONL files (documents dealt round robin); returns (documents, bytes of text)."""
    rng = random.Random(scale)
    folder.mkdir(parents=True, exist_ok=True)
    handles = [open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(files)]
    n = size = 0
    for copy in range(scale):
        for i, text in enumerate(base):
            if copy:
                text = perturb(text, rng, 0.02, False) if copy % 2 else perturb(text, rng, 0.30, True)
            handles[n % files].write(json.dumps({"id": f"c{copy}-{i}", "text": text}, ensure_ascii=False) + "\n")
            n += 1
            size += len(text.encode("utf-8"))
    for h in handles:
        h.close()
    return n, size


def write_recipe(folder: Path, inputs: Path, num_shards: int) -> Path:
    from tests.corpus.dedup_helpers import rules_off

    rules = "\n".join(f"    {o.split('.', 2)[2].split('=')[0]}: {o.split('=', 1)[1]}" for o in rules_off())
    path = folder / "recipe.yaml"
    path.write_text(f"name: scale\nworkdir: run\nstages: [corpus]\ncorpus:\n  num_shards: {num_shards}\n"
                    f"  workers: {WORKERS}\n  dedup: {{near: true}}\n  rules:\n{rules}\n  sources:\n"
                    f"    - {{name: web-prose, paths: ['{inputs}/*.jsonl']}}\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- measured tasks (spawned workers)
def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _measured(fn, *args) -> dict:
    _reset_peak()
    cpu, start = _cpu(), time.perf_counter()
    fn(*args)
    return {"peak_mb": _peak_mb(), "cpu_s": _cpu() - cpu, "wall_s": time.perf_counter() - start}


def _kamado_task(args: tuple) -> dict:
    what, recipe_path, task, num_tasks = args
    from kamado.recipe import load_recipe
    from kamado.stage import Workspace

    recipe = load_recipe(recipe_path)
    ws = Workspace(recipe)
    if what == "filter":
        from kamado.corpus.stage import run_shard

        return _measured(run_shard, recipe, ws, task, num_tasks)
    from kamado.corpus.dedup import run_phase

    return _measured(run_phase, what, recipe, ws, task, num_tasks)


class CharTokenizer:
    """datatrove word tokenizer that makes every non-space character a word: n_grams=5 are character 5-grams."""

    language = "ja"

    def word_tokenize(self, text: str) -> list[str]:
        return list("".join(text.split()))

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


def _datatrove_task(args: tuple) -> dict:
    stage, inputs, work, task, num_tasks = args
    from loguru import logger

    logger.remove()  # datatrove logs every document batch to stderr
    import xxhash
    from datatrove.utils.hashes import xxhash as dt_xxhash

    # datatrove 0.10 passes str to xxhash, which xxhash >= 4 refuses ("Strings must be encoded"): encode first
    dt_xxhash.xxhash32 = lambda data: xxhash.xxh32_intdigest(data.encode("utf-8") if isinstance(data, str) else data)
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Chars(CharTokenizer, WordTokenizer):
        def __init__(self):
            WordTokenizer.__init__(self, "ja")

    cfg = MinhashConfig(n_grams=5, num_buckets=20, hashes_per_bucket=10, seed=42, hash_config=HashConfig(precision=32))
    w = Path(work)
    pipeline = {
        "signatures": lambda: [JsonlReader(str(inputs), glob_pattern="*.jsonl"),
                               MinhashDedupSignature(output_folder=str(w / "sigs"), config=cfg, language=Chars())],
        "buckets": lambda: [MinhashDedupBuckets(input_folder=str(w / "sigs"), output_folder=str(w / "buckets"), config=cfg)],
        "clusters": lambda: [MinhashDedupCluster(input_folder=str(w / "buckets"), output_folder=str(w / "remove"), config=cfg)],
        "filter": lambda: [JsonlReader(str(inputs), glob_pattern="*.jsonl"), MinhashDedupFilter(input_folder=str(w / "remove")),
                           JsonlWriter(str(w / "out"))],
    }[stage]()
    ex = LocalPipelineExecutor(pipeline=pipeline, tasks=num_tasks, workers=1, local_tasks=1, local_rank_offset=task,
                               logging_dir=str(w / "logs" / stage), skip_completed=False)
    return _measured(ex.run)


def _quiet() -> None:
    """Worker start: datatrove prints its stats tables to stdout and logs to stderr."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)


def run_tasks(pool, fn, jobs: list[tuple]) -> list[dict]:
    return pool.map(fn, jobs, chunksize=1)


def spawn_pool(quiet: bool = False):
    return mp.get_context("spawn").Pool(WORKERS, initializer=_quiet if quiet else None)


# ---------------------------------------------------------------- one scale
def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_kamado(recipe_path: Path) -> dict:
    from kamado.corpus.dedup import PHASES, num_tasks_for
    from kamado.corpus.stage import finish
    from kamado.recipe import load_recipe
    from kamado.stage import Workspace

    recipe = load_recipe(recipe_path)
    ws = Workspace(recipe)
    ws.prepare("corpus")
    n = recipe.corpus.num_shards
    phases: dict[str, dict] = {}
    pool = spawn_pool()
    start = time.perf_counter()
    phases["filter"] = {"tasks": run_tasks(pool, _kamado_task, [("filter", str(recipe_path), s, n) for s in range(n)])}
    timings = {}
    for name in PHASES:
        t = time.perf_counter()
        k = num_tasks_for(name, recipe, ws)
        phases[name] = {"tasks": run_tasks(pool, _kamado_task, [(name, str(recipe_path), i, k) for i in range(k)])}
        timings[name] = {"tasks": k, "items": k, "seconds": round(time.perf_counter() - t, 3), "skipped_done": 0}
    pool.close()
    cpu = _cpu()
    finish(recipe, ws, timings)  # the report (reads the phases' outputs): in this process
    phases["finish (report)"] = {"tasks": [{"peak_mb": float("nan"), "cpu_s": _cpu() - cpu}]}
    report = json.loads((ws.stage_dir("corpus") / "report.json").read_text())
    return {"phases": phases, "wall_s": time.perf_counter() - start, "disk": du(ws.stage_dir("corpus")),
            "docs_kept": report["docs_kept"], "dropped": report["dropped"]}


def run_datatrove(inputs: Path, work: Path, files: int) -> dict:
    phases = {}
    pool = spawn_pool(quiet=True)
    start = time.perf_counter()
    for stage, tasks in (("signatures", files), ("buckets", 20), ("clusters", 1), ("filter", files)):
        jobs = [(stage, str(inputs), str(work), t, tasks) for t in range(tasks)]
        phases[stage] = {"tasks": run_tasks(pool, _datatrove_task, jobs)}
    pool.close()
    removed = sum(1 for _ in (work / "remove").glob("*.remove"))
    kept = 0
    for p in (work / "out").glob("*.jsonl*"):
        with (gzip.open(p, "rt") if p.suffix == ".gz" else open(p)) as fh:
            kept += sum(1 for _ in fh)
    return {"phases": phases, "wall_s": time.perf_counter() - start, "disk": du(work), "docs_kept": kept,
            "remove_files": removed}


def run_slurm(recipe_path: Path, workdir: Path, timeout: float = 900) -> dict:
    """`kamado run --executor slurm` (it submits the chained arrays and returns); wait until the queue is empty."""
    from tests.slurm_cluster import LocalSlurmCluster

    run_dir = workdir / "slurm-run"
    with LocalSlurmCluster(workdir / "cluster") as cluster:
        env = {**os.environ, **cluster.env, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "kamado.cli", "run", str(recipe_path), "--executor", "slurm",
                              "--workdir", str(run_dir)], capture_output=True, text=True, env=env)
        if out.returncode:
            return {"error": out.stderr[-2000:]}
        while time.perf_counter() - start < timeout:
            if not subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env).stdout.strip():
                break
            time.sleep(1)
        wall = time.perf_counter() - start
    report_path = run_dir / "corpus" / "report.json"
    if not report_path.is_file():
        logs = sorted(run_dir.rglob("*.err"))
        return {"error": f"no report after {wall:.0f} s; " + (logs[-1].read_text()[-1500:] if logs else "no job log")}
    report = json.loads(report_path.read_text())
    # every phase's task records (kamado.phase_tasks): the filter array's too, each with its task's peak RSS
    phases: dict[str, dict] = {}
    for rec in sorted((run_dir / "corpus" / "phases").glob("*.json")):
        r = json.loads(rec.read_text())
        p = phases.setdefault(r["phase"], {"tasks": 0, "start": r["started_at"], "end": r["ended_at"], "peak_mb": 0.0})
        p.update(tasks=p["tasks"] + 1, start=min(p["start"], r["started_at"]), end=max(p["end"], r["ended_at"]),
                 peak_mb=max(p["peak_mb"], r.get("peak_rss_mb", 0.0)))
    return {"wall_s": wall, "docs_kept": report["docs_kept"],
            "phases": {k: {"tasks": v["tasks"], "seconds": v["end"] - v["start"], "peak_mb": v["peak_mb"]}
                       for k, v in phases.items()}}


# ---------------------------------------------------------------- tables
def summary(name: str, res: dict, docs: int, nbytes: int, only: tuple | None = None) -> dict:
    phases = {k: v for k, v in res["phases"].items() if only is None or k in only}
    cpu = {k: sum(t["cpu_s"] for t in v["tasks"]) for k, v in phases.items()}
    peak = {k: max((t["peak_mb"] for t in v["tasks"]), default=0.0) for k, v in phases.items()}
    total = sum(cpu.values())
    rate = docs / total if total else float("nan")
    n_tb = 1e12 / (nbytes / docs)
    return {"name": name, "docs": docs, "cpu_s": total, "docs_per_core_s": rate, "peak_mb": peak,
            "share": {k: c / total for k, c in cpu.items()}, "core_hours_1tb": n_tb / rate / 3600,
            "phase_core_hours_1tb": {k: n_tb * c / docs / 3600 for k, c in cpu.items()}, "disk_b_per_doc": res["disk"] / docs}


def print_table(rows: list[dict]) -> None:
    print("\n| run | scale | docs | CPU s | docs/s per core | max peak RSS per task | disk B/doc | core-hours at 1 TB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        peaks = [v for v in r["peak_mb"].values() if v == v]
        print(f"| {r['name']} | {r['scale']}x | {r['docs']:,} | {r['cpu_s']:.1f} | {r['docs_per_core_s']:,.0f} | "
              f"{max(peaks):,.0f} MB | {r['disk_b_per_doc']:,.0f} | {r['core_hours_1tb']:,.0f} |")
    print("\nper phase (share of CPU, peak RSS per task, core-hours at 1 TB):")
    for r in rows:
        cells = ", ".join(f"{k} {100 * s:.0f}% {r['peak_mb'][k]:.0f} MB {r['phase_core_hours_1tb'][k]:,.0f} h"
                          for k, s in r["share"].items())
        print(f"  {r['name']} {r['scale']}x: {cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--base-mb", type=float, default=4.0, help="UTF-8 MB of text in the 1x corpus")
    ap.add_argument("--big", action="store_true", help="also 16x (minutes on a 2-core machine)")
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--slurm", action="store_true", help="also as Slurm arrays on a two-node local test cluster")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    base = base_docs(Path(args.data), args.base_mb)
    print(f"1x corpus: {len(base):,} documents, {sum(len(t.encode()) for t in base) / 1e6:.1f} MB, from {len(FILES)} "
          f"shared web/prose files; {WORKERS} workers; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          flush=True)
    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="kamado-corpus-scale-") as tmp:
        for scale in (1, 4, 16) if args.big else (1, 4):
            folder = Path(tmp) / f"x{scale}"
            shards = 2 * scale
            docs, nbytes = write_inputs(base, scale, folder / "inputs", files=2 * shards)
            recipe = write_recipe(folder, folder / "inputs", shards)
            k = run_kamado(recipe)
            raw[f"kamado {scale}x"] = k
            kd = k["dropped"]
            print(f"{scale}x: {docs:,} documents, {nbytes / 1e6:.1f} MB; kamado kept {k['docs_kept']:,} (near "
                  f"{kd.get('near_duplicate', 0):,}, exact {kd.get('exact_duplicate', 0):,}, contained "
                  f"{kd.get('contained_duplicate', 0):,}; rules {sum(v for r, v in kd.items() if 'duplicate' not in r):,}) "
                  f"in {k['wall_s']:.1f} s wall", flush=True)
            rows.append({**summary("kamado corpus stage", k, docs, nbytes), "scale": scale})
            rows.append({**summary("kamado dedup only", k, docs, nbytes,
                                   only=("signatures", "buckets", "verify", "clusters", "apply")), "scale": scale})
            if not args.no_datatrove:
                d = run_datatrove(folder / "inputs", folder / "datatrove", 2 * shards)
                raw[f"datatrove {scale}x"] = d
                print(f"{scale}x: datatrove kept {d['docs_kept']:,} in {d['wall_s']:.1f} s wall", flush=True)
                rows.append({**summary("datatrove MinHash", d, docs, nbytes), "scale": scale})
            if args.slurm:
                s = run_slurm(recipe, folder)
                raw[f"slurm {scale}x"] = s
                if "error" in s:
                    print(f"{scale}x on Slurm: failed: {s['error']}", flush=True)
                else:
                    tasks = ", ".join(f"{k} {v['tasks']} tasks {v['seconds']:.1f} s peak {v['peak_mb']:.0f} MB/task"
                                      for k, v in s["phases"].items())
                    print(f"{scale}x on Slurm (2 nodes x 1 CPU, filter array + 5 dedup arrays + finish): {s['wall_s']:.1f} s "
                          f"wall from submit to an empty queue; kept {s['docs_kept']:,} (local: {k['docs_kept']:,}); "
                          f"arrays: {tasks}", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "raw": raw}, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
