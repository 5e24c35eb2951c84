"""Total CPU of the corpus stage for several shard counts on the same inputs (the shared web data), one worker.

Each shard count runs the whole stage (`kamado run --only corpus` equivalent: plan, shards, dedup, report) in a
fresh child process; the figures are that child's user+sys CPU including its own children (getrusage of the
waited child), and its peak RSS. Before the shard plan every shard read and parsed every input (issue #16: 8 shards
cost 5.3x the CPU of 1); with the plan a shard opens only its slices, so the ratios should stay near 1 (goal: the
largest within 1.15x of the smallest).

    python benchmarks/corpus_shards.py                      # 1, 8, 64 shards on the JSONL web data
    python benchmarks/corpus_shards.py --warc --shards 1 8  # add the 2,940-page WARC (HTML extraction: slower)
    python benchmarks/corpus_shards.py --huge-mb 300        # plan a generated 300 MB JSONL for 64 shards, read
                                                            # one slice in a child: plan time, balance, peak RSS
    python benchmarks/corpus_shards.py --many-files 10000   # the whole `kamado run --only corpus` (near dedup on)
                                                            # on 10,000 small .txt files, 8 shards: time, CPU,
                                                            # each phase's tasks and largest task RSS
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

WEB = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "web"
SOURCES = [("kwdlc", "kwdlc_web_document_leads.jsonl.gz", "text"), ("mc4", "mc4_ja_quality_labels_dev.jsonl.gz", "text"),
           ("abeja", "abeja_cc_ja_sample_99docs.jsonl.gz", "text")]


def recipe_text(num_shards: int, warc: bool) -> str:
    rows = [f"    - {{name: {n}, paths: ['{WEB / f}'], text_field: {t}}}" for n, f, t in SOURCES]
    if warc:
        rows.append(f"    - {{name: warc, paths: ['{WEB / 'ja_docs_html.warc.gz'}']}}")
    return (f"name: bench\nworkdir: run\nstages: [corpus]\ncorpus:\n  num_shards: {num_shards}\n  workers: 1\n"
            "  rules: {min_chars: 50, min_hiragana_fraction: 0.1, min_avg_sentence_length: 0}\n"
            "  sources:\n" + "\n".join(rows) + "\n")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_once(num_shards: int, warc: bool) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"corpus-shards-{num_shards}-"))
    (folder / "r.yaml").write_text(recipe_text(num_shards, warc), encoding="utf-8")
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            from kamado.corpus.plan import ensure_plan
            from kamado.corpus.stage import dedup_then_timings, finish, run_shard
            from kamado.recipe import load_recipe
            from kamado.stage import Workspace

            # the stage's own steps (stage.run without its progress bar), CPU taken between them
            recipe = load_recipe(folder / "r.yaml")
            ws = Workspace(recipe)
            ws.prepare("corpus")
            marks = [_cpu()]
            ensure_plan(recipe, ws, num_shards)
            marks.append(_cpu())
            for shard in range(num_shards):
                run_shard(recipe, ws, shard, num_shards)
            marks.append(_cpu())
            finish(recipe, ws, dedup_then_timings(recipe, ws))  # every dedup phase, then the report
            marks.append(_cpu())
            (folder / "cpu.json").write_text(json.dumps([b - a for a, b in zip(marks, marks[1:])]))
            code = 0
        finally:
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the corpus stage failed for {num_shards} shards (see {folder})")
    wall = time.perf_counter() - t0
    report = json.loads((folder / "run/corpus/report.json").read_text())
    plan = json.loads((folder / "run/corpus/work/plan.json").read_text())
    plan_s, shards_s, finish_s = json.loads((folder / "cpu.json").read_text())
    return {"shards": num_shards, "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall, "plan_cpu": plan_s,
            "shards_cpu": shards_s, "finish_cpu": finish_s,
            "peak_rss_mb": usage.ru_maxrss / 1024, "docs_in": report["docs_in"], "docs_kept": report["docs_kept"],
            "slices": len(plan["slices"]), "busy_shards": sum(1 for b in plan["bytes_per_shard"] if b)}


def huge_jsonl(mb: int, shards: int = 64) -> None:
    """One big uncompressed JSONL (lines of 0.5-5 KB of Japanese text, every 500th a 300 KB line): the plan cuts it
    by byte range at line starts; one task reads only its slice, in bounded memory."""
    import random

    from kamado.corpus.plan import make_plan
    from kamado.corpus.readers import Rejected, iter_source_file
    from kamado.corpus.config import CorpusSource

    folder = Path(tempfile.mkdtemp(prefix="corpus-huge-"))
    path = folder / "huge.jsonl"
    rng = random.Random(0)
    words = ["日本語", "の文章", "を書く", "。", "今日は", "晴れ", "でした", "、", "東京", "から", "大阪", "へ", "🍣"]
    lines = 0
    with open(path, "w", encoding="utf-8") as fh:
        while fh.tell() < mb << 20:
            n = 100_000 if lines % 500 == 499 else rng.randint(40, 400)
            fh.write(json.dumps({"id": lines, "text": "".join(rng.choices(words, k=n))}, ensure_ascii=False) + "\n")
            lines += 1
    size = path.stat().st_size
    t0 = time.perf_counter()
    plan = make_plan([CorpusSource(name="huge", paths=[str(path)])], shards)
    plan_s = time.perf_counter() - t0
    per = [sum(sl.nbytes for sl in plan if sl.shard == k) for k in range(shards)]
    big = max(plan, key=lambda sl: sl.nbytes)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        n = sum(1 for _, d in iter_source_file(big.path, "jsonl", "text", "id", "huge", html="never", part=big.part)
                if not isinstance(d, Rejected))
        os._exit(0 if n > 0 else 1)
    _, status, usage = os.wait4(pid, 0)
    print(f"huge JSONL: {size / 2**20:,.0f} MB, {lines:,} lines -> {len(plan)} byte-range slices for {shards} shards, "
          f"planned in {plan_s:.1f}s; bytes per shard max/mean {max(per) / (sum(per) / shards):.3f}; one task read "
          f"its {big.nbytes / 2**20:.1f} MB slice in {time.perf_counter() - t0:.1f}s, peak RSS "
          f"{usage.ru_maxrss / 1024:.0f} MB (exit {os.waitstatus_to_exitcode(status)})")
    path.unlink()


def many_files(n: int, shards: int = 8) -> None:
    """n small text files (one document each: the shared web documents, each file a different one or a different
    paragraph order of one), the whole corpus stage as a user runs it, with near dedup."""
    import gzip
    import subprocess

    folder = Path(tempfile.mkdtemp(prefix="corpus-many-"))
    texts = []
    for _, name, field in SOURCES:
        with gzip.open(WEB / name, "rt", encoding="utf-8") as fh:
            texts += [t for t in (json.loads(line).get(field) for line in fh) if t]
    for i in range(n):
        paras = texts[i % len(texts)].split("\n")
        k = i // len(texts)  # a later round: the paragraphs rotated, so the copies are near, not exact, duplicates
        d = folder / "txt" / f"d{i // 1000:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:05d}.txt").write_text("\n".join(paras[k % len(paras):] + paras[: k % len(paras)]), encoding="utf-8")
    (folder / "r.yaml").write_text(
        f"name: many\nworkdir: run\nstages: [corpus]\ncorpus:\n  num_shards: {shards}\n  workers: 2\n"
        "  rules: {min_chars: 50, min_hiragana_fraction: 0.1, min_avg_sentence_length: 0}\n  dedup: {near: true}\n"
        f"  sources:\n    - {{name: many, paths: ['{folder / 'txt'}']}}\n", encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kamado.cli", "run", str(folder / "r.yaml"), "--only", "corpus"],
                   check=True, capture_output=True, cwd=folder)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads((folder / "run/corpus/report.json").read_text())
    plan = json.loads((folder / "run/corpus/work/plan.json").read_text())
    records: dict[str, list[dict]] = {}
    for f in sorted((folder / "run/corpus/phases").glob("*.json")):
        r = json.loads(f.read_text())
        records.setdefault(r["phase"], []).append(r)
    print(f"{n:,} files -> {len(plan['slices']):,} slices for {shards} shards; docs in {report['docs_in']:,}, kept "
          f"{report['docs_kept']:,} (near duplicates removed {report['dedup']['near_removed']:,}); whole command "
          f"{wall:.1f} s wall, {after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime:.1f} s CPU")
    for name, rs in sorted(records.items(), key=lambda kv: min(r["started_at"] for r in kv[1])):  # the tasks' own records (kamado.phase_tasks): items, time, peak RSS
        print(f"  {name:<10} {len(rs):>3} tasks, {sum(r['items'] for r in rs):>4} units, "
              f"{max(r['ended_at'] for r in rs) - min(r['started_at'] for r in rs):6.1f} s, "
              f"largest task {max(r['peak_rss_mb'] for r in rs):5.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--warc", action="store_true", help="also read the WARC (HTML extraction)")
    ap.add_argument("--huge-mb", type=int, default=0, help="instead: plan and slice a generated JSONL of this size")
    ap.add_argument("--many-files", type=int, default=0, help="instead: the whole stage on this many small .txt files")
    args = ap.parse_args()
    if args.huge_mb:
        return huge_jsonl(args.huge_mb)
    if args.many_files:
        return many_files(args.many_files)
    if not WEB.is_dir():
        sys.exit(f"{WEB} is missing (the shared web data, see its README)")
    import kamado.corpus.stage  # noqa: F401  imported before the forks: the children measure the stage, not imports

    rows = [run_once(n, args.warc) for n in args.shards]
    base = rows[0]["cpu_s"]
    print(f"{'shards':>6} {'slices':>6} {'busy':>5} {'docs in':>8} {'kept':>6} {'CPU s':>8} {'ratio':>6} "
          f"{'plan':>6} {'shards':>7} {'dedup+report':>13} {'wall s':>7} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['shards']:>6} {r['slices']:>6} {r['busy_shards']:>5} {r['docs_in']:>8,} {r['docs_kept']:>6,} "
              f"{r['cpu_s']:>8.1f} {r['cpu_s'] / base:>6.2f} {r['plan_cpu']:>6.2f} {r['shards_cpu']:>7.1f} "
              f"{r['finish_cpu']:>13.1f} {r['wall_s']:>7.1f} {r['peak_rss_mb']:>12.0f}")
    cpus = [r["cpu_s"] for r in rows]
    print(f"largest/smallest CPU: {max(cpus) / min(cpus):.2f}x (goal <= 1.15x); reports equal in docs: "
          f"{len({(r['docs_in'], r['docs_kept']) for r in rows}) == 1}")


if __name__ == "__main__":
    main()
