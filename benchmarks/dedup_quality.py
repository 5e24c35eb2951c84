"""Near-duplicate quality on the gold pairs of ../shared/data/neardup: kamado vs datasketch vs rensa, same run.

    pip install datasketch rensa        # for this benchmark only; not kamado dependencies
    python benchmarks/dedup_quality.py [--data ../shared/data/neardup] [--json out.json]

Same settings for all: character 5-grams of `text_plain` with whitespace removed, 200 permutations, LSH with
20 bands x 10 rows, clusters by union-find over the LSH candidates. A gold pair counts as found when both
documents end in the same cluster (for kamado: when following `duplicate_of` from both reaches the same kept
document). Precision = positives found / (positives found + negatives merged); the unverified pairs (label
null: often another edition, sometimes another work) are reported apart. Time: datasketch and rensa from texts in
memory to clusters; "kamado functions in memory" is the same for kamado's own MinHash/LSH code (like with like);
the "kamado ..." rows run the real dedup phases in one process (reading the filter shard from disk, writing
checksummed outputs and the final data shard), so their time includes I/O the others do not do.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {"ngram": 5, "num_perm": 200, "bands": 20, "rows": 10}
_WS = re.compile(r"\s+")


class UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def shingles(text: str, n: int) -> list[str]:
    t = _WS.sub("", text)
    return [t[i:i + n] for i in range(max(1, len(t) - n + 1))]


def run_datasketch(docs: list[dict], verify: float = 0.0) -> dict[str, str]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=SETTINGS["num_perm"], params=(SETTINGS["bands"], SETTINGS["rows"]))
    uf, sigs = UnionFind(), {}
    for d in docs:
        m = MinHash(num_perm=SETTINGS["num_perm"], seed=42)
        m.update_batch([s.encode("utf-8") for s in shingles(d["text_plain"], SETTINGS["ngram"])])
        for other in lsh.query(m):
            if not verify or m.jaccard(sigs[other]) >= verify:
                uf.union(other, d["doc_id"])
        lsh.insert(d["doc_id"], m)
        sigs[d["doc_id"]] = m
    return {d["doc_id"]: uf.find(d["doc_id"]) for d in docs}


def run_rensa(docs: list[dict], verify: float = 0.0) -> dict[str, str]:
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=0.5, num_perm=SETTINGS["num_perm"], num_bands=SETTINGS["bands"])
    uf, sigs = UnionFind(), []
    for i, d in enumerate(docs):
        m = RMinHash(num_perm=SETTINGS["num_perm"], seed=42)
        m.update(shingles(d["text_plain"], SETTINGS["ngram"]))
        for other in lsh.query(m):
            if not verify or m.jaccard(sigs[other]) >= verify:
                uf.union(other, i)
        lsh.insert(i, m)
        sigs.append(m)
    return {d["doc_id"]: docs[uf.find(i)]["doc_id"] for i, d in enumerate(docs)}


def run_kamado_core(docs: list[dict], verify: float = 0.8) -> dict[str, str]:
    """kamado's MinHash and LSH functions on texts in memory (no files, no containment): like with like."""
    import numpy as np

    from kamado.corpus.dedup.exact import fingerprint_text
    from kamado.corpus.dedup.lsh import band_keys, star_pairs, unique_pairs
    from kamado.corpus.dedup.minhash import MinHasher, estimated_jaccard, shingle_hashes

    hashes = [shingle_hashes(fingerprint_text(d["text_plain"]), SETTINGS["ngram"]) for d in docs]
    sigs = MinHasher(SETTINGS["num_perm"], seed=42).signatures(hashes)
    keys = band_keys(sigs, SETTINGS["bands"], SETTINGS["rows"])
    ids = np.arange(len(docs), dtype=np.uint64)
    parts = []
    for band in keys:
        o = np.argsort(band, kind="stable")
        parts.append(star_pairs(band[o], ids[o]))
    pairs = unique_pairs(np.sort(np.concatenate(parts), axis=1))[0].astype(np.int64)
    if verify:
        pairs = pairs[estimated_jaccard(sigs[pairs[:, 0]], sigs[pairs[:, 1]]) >= verify]
    uf = UnionFind()
    for a, b in pairs.tolist():
        uf.union(a, b)
    return {d["doc_id"]: docs[uf.find(i)]["doc_id"] for i, d in enumerate(docs)}


def run_kamado(path: Path, workdir: Path, *overrides: str, text_field: str = "text_plain") -> tuple[dict[str, str], float, dict]:
    from kamado.corpus.stage import dedup_then_timings, finish, run_shard
    from kamado.recipe import load_recipe
    from kamado.stage import Workspace
    from tests.corpus.dedup_helpers import rules_off

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "r.yaml").write_text(
        f"name: bench\nworkdir: run\nstages: [corpus]\ncorpus:\n  nfkc: false\n  mask_pii: false\n  num_shards: 1\n"
        f"  workers: 1\n  sources:\n    - {{name: neardup, paths: ['{path}'], text_field: {text_field}, id_field: doc_id}}\n",
        encoding="utf-8")
    recipe = load_recipe(workdir / "r.yaml", [*rules_off(), "corpus.dedup.near=true", *overrides])
    ws = Workspace(recipe)
    ws.prepare("corpus")
    run_shard(recipe, ws, 0, 1)  # the filter pass (rules off): not timed, the others get texts in memory
    start = time.perf_counter()
    finish(recipe, ws, dedup_then_timings(recipe, ws))  # every dedup phase, then the report
    seconds = time.perf_counter() - start
    report = json.loads((ws.stage_dir("corpus") / "report.json").read_text())
    parent = {d["id"]: d["duplicate_of"] for d in json.loads((ws.stage_dir("corpus") / "duplicates.json").read_text())}

    def root(x: str) -> str:
        while parent.get(x):
            x = parent[x]
        return x

    ids = [json.loads(line)["doc_id"] for line in gzip.open(path, "rt", encoding="utf-8")]
    return {i: root(i) for i in ids}, seconds, report


def score(roots: dict[str, str], pairs: list[dict]) -> dict:
    merged = [roots[p["doc_a"]] == roots[p["doc_b"]] for p in pairs]
    pos = [m for m, p in zip(merged, pairs) if p["label"] == 1]
    neg = [m for m, p in zip(merged, pairs) if p["label"] == 0]
    unv = [m for m, p in zip(merged, pairs) if p["label"] is None]
    tp, fp = sum(pos), sum(neg)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / len(pos)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    missed = [p for m, p in zip(merged, pairs) if p["label"] == 1 and not m]
    return {"found": f"{tp}/{len(pos)}", "negatives_merged": f"{fp}/{len(neg)}", "unverified_merged": f"{sum(unv)}/{len(unv)}",
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "missed": [(p["doc_a"], p["doc_b"], p["char5_jaccard_plain"]) for p in missed]}


def neardup_set(data: Path) -> tuple[Path, list[dict]]:
    """The shared near-duplicate documents file and its gold pairs (exits with a message when absent)."""
    docs_path = data / "aozora_variants_docs_part1.jsonl.gz"
    if not docs_path.is_file():
        sys.exit(f"{docs_path}: not found (the shared neardup data set is needed)")
    return docs_path, [json.loads(line) for line in open(data / "aozora_variants_pairs_part1.jsonl", encoding="utf-8")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "neardup"))
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    docs_path, pairs = neardup_set(Path(args.data))
    docs = [json.loads(line) for line in gzip.open(docs_path, "rt", encoding="utf-8")]
    print(f"{len(docs)} documents, {len(pairs)} pairs; settings {SETTINGS}")

    rows = []
    for name, fn in [("datasketch MinHashLSH", lambda: run_datasketch(docs)),
                     ("rensa RMinHashLSH", lambda: run_rensa(docs)),
                     ("rensa + verify J>=0.8", lambda: run_rensa(docs, verify=0.8)),
                     ("kamado functions in memory, verify 0.8", lambda: run_kamado_core(docs)),
                     ("kamado functions in memory, no verify", lambda: run_kamado_core(docs, verify=0.0))]:
        start = time.perf_counter()
        roots = fn()
        rows.append({"method": name, "seconds": round(time.perf_counter() - start, 3), **score(roots, pairs)})
    with tempfile.TemporaryDirectory(prefix="kamado-dedup-bench-") as tmp:
        for name, over, field in [
            ("kamado (verify 0.8 + containment)", [], "text_plain"),
            ("kamado, no containment", ["corpus.dedup.containment=false"], "text_plain"),
            ("kamado, no verify, no containment", ["corpus.dedup.containment=false", "corpus.dedup.verify_threshold=0"], "text_plain"),
            ("kamado on text_raw (the raw Aozora file: ruby, notes, header)", [], "text_raw"),
        ]:
            roots, seconds, report = run_kamado(docs_path, Path(tmp) / f"k{len(rows)}", *over, text_field=field)
            d = report["dedup"]
            rows.append({"method": name, "seconds": round(seconds, 3), **score(roots, pairs),
                         "removed": {"exact": d["exact_removed"], "near": d["near_removed"], "contained": d["contained_removed"]},
                         "phases_s": {k: v["seconds"] for k, v in d["phases"].items()}})
    rensa_s = rows[1]["seconds"]
    print(f"\n| method | time s | vs rensa | found | negatives merged | unverified merged | precision | recall | F1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seconds']:.2f} | {r['seconds'] / rensa_s:.2f}x | {r['found']} | {r['negatives_merged']} | "
              f"{r['unverified_merged']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |")
    for r in rows:
        if r["missed"] or "phases_s" in r:
            print(f"{r['method']}: missed {r['missed']}" + (f"; removed {r['removed']}; phases {r['phases_s']}" if "phases_s" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
