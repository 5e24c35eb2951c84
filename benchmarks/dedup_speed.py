"""The whole `kamado run <recipe> --only corpus` with near dedup against rensa's MinHash+LSH, same run, same data.

    pip install rensa        # for this benchmark only; not a kamado dependency
    python benchmarks/dedup_speed.py [--data ../shared/data/neardup] [--repeats 3] [--profile] [--json out.json]
                                     [--kamado-root DIR]   # time another checkout's kamado (e.g. with a patch)
                                     [--baseline-root DIR] # and a second checkout in the same run, alternating

Data: the shared Aozora near-duplicate set (454 documents, 27.8 MB; `text_plain`, ids `doc_id`), gold pairs as in
benchmarks/dedup_quality.py. kamado: a recipe with every quality rule off (so that every document reaches dedup,
as in the quality benchmark), NFKC and PII masking off, `corpus.dedup.near: true`, everything else at its
default; the command a user types, timed from start to exit (interpreter start-up, imports, the filter pass, the
five dedup phases, the report), with kamado's bytecode compiled first as an install does. rensa: the same
settings (5-grams, whitespace removed, 200 permutations, 20 bands),
timed two ways: as a whole command too (start-up, read the .gz, shingle, MinHash, LSH query/insert), and its
MinHash+LSH loop alone on texts in memory. kamado's dedup phases alone (the five phases' wall seconds in
report.json: reading the filter shard, every phase's checksummed files, writing the final shard) are shown too. The commands alternate, `--repeats` times each; the median is reported,
with CPU seconds (user + system of the process and its children) beside wall time, because on a shared machine
wall time follows the load. Quality: the kamado run's duplicates.json against the gold pairs (found / merged).

`--profile` also runs the kamado command once under cProfile (one worker, so every phase is in one process) and
prints where the time goes: start-up imports, the filter pass (reading, rules, zstd), each dedup phase, the report.
`--baseline-root` (e.g. `git archive <commit> | tar -x -C /tmp/base`) times that checkout's command too, in the same
alternating loop, so that a before/after comparison sees the same load.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RENSA = r'''
import gzip, json, re, sys, time
from rensa import RMinHash, RMinHashLSH
ws = re.compile(r"\s+")
docs = [json.loads(line) for line in gzip.open(sys.argv[1], "rt", encoding="utf-8")]
start, cpu = time.perf_counter(), time.process_time()
lsh = RMinHashLSH(threshold=0.5, num_perm=200, num_bands=20)
parent = list(range(len(docs)))
def find(x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x
for i, d in enumerate(docs):
    t = ws.sub("", d["text_plain"])
    m = RMinHash(num_perm=200, seed=42)
    m.update([t[j:j + 5] for j in range(max(1, len(t) - 4))])
    for other in lsh.query(m):
        a, b = find(other), find(i)
        parent[max(a, b)] = min(a, b)
    lsh.insert(i, m)
roots = {d["doc_id"]: docs[find(i)]["doc_id"] for i, d in enumerate(docs)}
print(json.dumps({"loop_s": time.perf_counter() - start, "loop_cpu_s": time.process_time() - cpu, "roots": roots}))
'''


def write_recipe(folder: Path, docs: Path) -> Path:
    from tests.corpus.dedup_helpers import rules_off

    rules = "\n".join(f"    {o.split('.', 2)[2].split('=')[0]}: {o.split('=', 1)[1]}" for o in rules_off())
    path = folder / "recipe.yaml"
    path.write_text(
        "name: dedup-speed\nworkdir: run\nstages: [corpus]\ncorpus:\n  nfkc: false\n  mask_pii: false\n"
        f"  dedup: {{near: true}}\n  rules:\n{rules}\n  sources:\n"
        f"    - {{name: neardup, paths: ['{docs}'], text_field: text_plain, id_field: doc_id}}\n", encoding="utf-8")
    return path


def timed(cmd: list[str], cwd: Path, root: Path = ROOT) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the command and its children), stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out.stdout


def kamado_roots(run_dir: Path, docs: Path) -> dict[str, str]:
    parent = {d["id"]: d["duplicate_of"] for d in json.loads((run_dir / "corpus" / "duplicates.json").read_text())}

    def root(x: str) -> str:
        while parent.get(x):
            x = parent[x]
        return x

    return {i: root(i) for i in (json.loads(line)["doc_id"] for line in gzip.open(docs, "rt", encoding="utf-8"))}


def profile(recipe: Path, folder: Path) -> None:
    """cProfile of the whole command in one process; cumulative seconds of the places time goes."""
    prof = cProfile.Profile()
    os.chdir(folder)
    prof.enable()
    from kamado import cli  # the imports count: they are part of the command's start-up

    one_worker = folder / "recipe-one-worker.yaml"  # not --set: that would load the recipe the OmegaConf way
    one_worker.write_text(recipe.read_text(encoding="utf-8").replace("corpus:\n", "corpus:\n  workers: 1\n", 1), encoding="utf-8")
    try:
        cli.main(["run", str(one_worker), "--only", "corpus", "--workdir", str(folder / "prof")])
    except SystemExit:
        pass
    prof.disable()
    stats = pstats.Stats(prof)
    total = max(v[3] for v in stats.stats.values())

    def cum(file_part: str, func: str) -> float:
        return sum(v[3] for (f, _, n), v in stats.stats.items() if file_part in f and n == func)

    def own(func: str) -> float:
        return sum(v[2] for (f, _, n), v in stats.stats.items() if n == func)

    def calls(func: str) -> int:
        return sum(v[1] for (f, _, n), v in stats.stats.items() if n == func)

    def cum_from(file_part: str, func: str, caller_part: str) -> float:
        """Cumulative seconds of `func` when called from a function in a file matching `caller_part`."""
        return sum(c[3] for (f, _, n), v in stats.stats.items() if file_part in f and n == func
                   for (cf, _, _), c in v[4].items() if caller_part in cf)

    rows = [
        ("imports (all modules, whole command)", cum("<frozen importlib._bootstrap>", "_find_and_load") - 0.0),
        ("recipe: load_recipe", cum("kamado/recipe.py", "load_recipe")),
        ("  to_yaml (recipe.resolved.yaml)", cum("kamado/recipe.py", "to_yaml")),
        ("  to_dict (fingerprints, DONE.json)", cum("kamado/recipe.py", "to_dict")),
        ("filter pass: run_shard", cum("corpus/stage.py", "run_shard")),
        ("  gzip compress (zlib: final shards), whole command", own("<method 'compress' of 'zlib.Compress' objects>")),
        ("  gzip compress (isal igzip: final shards)", cum("isal/igzip.py", "write")),
        ("  gzip decompress (zlib: input .gz), whole command", own("<method 'decompress' of 'zlib.Decompress' objects>")),
        ("  quality rules: apply_filters", cum("corpus/filters.py", "apply_filters")),
        ("every phase, filter included (kamado.local)", cum("kamado/local.py", "run_phases_here")),
        ("  signatures", cum("dedup/signatures.py", "signatures_item")),
        ("    MinHash (its background thread: not profiled)", cum("dedup/minhash.py", "signatures")),
        ("    fingerprint text (regexes)", cum("dedup/exact.py", "fingerprint_text")),
        ("  buckets", cum("dedup/buckets.py", "buckets_item")),
        ("  verify", cum("dedup/verify.py", "verify_item")),
        ("  clusters", cum("dedup/apply.py", "clusters_item")),
        ("  apply", cum("dedup/apply.py", "apply_item")),
        ("  checksums (blake2b)", own("<built-in method _hashlib.blake2b>") + own("<method 'hexdigest' of '_blake2.blake2b' objects>")
         + cum("dedup/store.py", "_block_sums")),
        ("  writing phase outputs (store.write_outputs)", cum("dedup/store.py", "write_outputs")),
        ("  phase task records (kamado.phase_tasks)", cum_from("kamado/durable.py", "write_atomic", "phase_tasks.py")),
        (f"  fsync ({calls('<built-in method posix.fsync>')} calls, main thread)", own("<built-in method posix.fsync>")),
        ("report: add_cleaning_report (drops.png)", cum("corpus/report.py", "add_cleaning_report")),
    ]
    print(f"\nprofile of one command (cProfile, one worker; total {total:.2f} s; profiling slows Python code):")
    for name, s in rows:
        print(f"  {name:<44}{s:>7.2f} s {100 * s / total:>5.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "neardup"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--kamado-root", default=str(ROOT), help="the checkout whose kamado the command runs")
    ap.add_argument("--baseline-root", default=None, help="a second checkout, timed in the same alternating loop")
    args = ap.parse_args()
    from dedup_quality import neardup_set, score

    # Bytecode as an installed kamado has it (pip compiles it at install time; an editable install writes it at
    # the first import): without it, and with PYTHONDONTWRITEBYTECODE set as on some shared machines, every
    # command compiles kamado's ~130 modules from source again (~0.06 s of its start-up).
    for root in filter(None, (args.kamado_root, args.baseline_root)):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(root) / "kamado")], check=True)

    docs, pairs = neardup_set(Path(args.data))
    with tempfile.TemporaryDirectory(prefix="kamado-dedup-speed-") as tmp:
        folder = Path(tmp)
        recipe = write_recipe(folder, docs)
        (folder / "rensa_cmd.py").write_text(RENSA, encoding="utf-8")
        runs: dict[str, list[tuple[float, float]]] = {
            "kamado run (whole command)": [], "kamado dedup phases alone (from report.json)": [],
            "kamado start-up (python -c 'import kamado.cli, kamado.corpus.stage')": [],
            "rensa (whole command)": [], "rensa MinHash+LSH loop (texts in memory)": []}
        if args.baseline_root:
            runs[f"baseline kamado run ({args.baseline_root})"] = []
        quality = {}
        for r in range(args.repeats):
            run_dir = folder / f"run{r}"
            wall, cpu, _ = timed([sys.executable, "-m", "kamado.cli", "run", str(recipe), "--only", "corpus",
                                  "--workdir", str(run_dir)], folder, Path(args.kamado_root))
            runs["kamado run (whole command)"].append((wall, cpu))
            quality["kamado"] = score(kamado_roots(run_dir, docs), pairs)
            report = json.loads((run_dir / "corpus" / "report.json").read_text())
            dedup_s = sum(p["seconds"] for p in report["dedup"]["phases"].values())
            runs["kamado dedup phases alone (from report.json)"].append((dedup_s, float("nan")))
            runs["kamado start-up (python -c 'import kamado.cli, kamado.corpus.stage')"].append(timed(
                [sys.executable, "-c", "import kamado.cli, kamado.corpus.stage"], folder, Path(args.kamado_root))[:2])
            if args.baseline_root:
                base_dir = folder / f"base{r}"
                wall, cpu, _ = timed([sys.executable, "-m", "kamado.cli", "run", str(recipe), "--only", "corpus",
                                      "--workdir", str(base_dir)], folder, Path(args.baseline_root))
                runs[f"baseline kamado run ({args.baseline_root})"].append((wall, cpu))
                quality["baseline kamado"] = score(kamado_roots(base_dir, docs), pairs)
            wall, cpu, out = timed([sys.executable, str(folder / "rensa_cmd.py"), str(docs)], folder)
            res = json.loads(out)
            runs["rensa (whole command)"].append((wall, cpu))
            runs["rensa MinHash+LSH loop (texts in memory)"].append((res["loop_s"], res["loop_cpu_s"]))
            quality["rensa"] = score(res["roots"], pairs)
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
        k_wall, k_cpu = med["kamado run (whole command)"]
        print(f"{len(pairs)} gold pairs; {args.repeats} alternating runs each, medians; load average now "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print("\n| what | wall s | CPU s | kamado wall / this | kamado CPU / this |\n|---|---|---|---|---|")
        for k, (w, c) in med.items():
            cells = f"{c:.2f} | {k_wall / w:.2f}x | {k_cpu / c:.2f}x" if c == c else "- | - | -"
            print(f"| {k} | {w:.2f} | {cells} |")
        print("\n| method | found (same work) | different-work pairs merged | unverified merged |\n|---|---|---|---|")
        for k, q in quality.items():
            print(f"| {k} | {q['found']} | {q['negatives_merged']} | {q['unverified_merged']} |")
        d = report["dedup"]
        print(f"\nkamado removed {d['exact_removed']} exact, {d['near_removed']} near, {d['contained_removed']} contained; "
              f"dedup phases (last run): " + ", ".join(f"{k} {v['seconds']:.2f}s/{v['tasks']}" for k, v in d["phases"].items()))
        if args.profile:
            profile(recipe, folder)
        if args.json:
            Path(args.json).write_text(json.dumps({"medians": med, "runs": runs, "quality": quality}, indent=2))


if __name__ == "__main__":
    main()
