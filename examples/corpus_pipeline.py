"""A custom corpus pipeline in plain Python, built from kamado's parts.

    python examples/corpus_pipeline.py OUT_DIR [INPUT ...]    # inputs: files, folders or globs; default
                                                              # examples/data/corpus/*

readers (kamado.corpus.readers: JSONL .gz/.zst, Parquet, HF datasets, text folders, WARC) → normalize → quality
rules (kamado.corpus.filters, plus a rule of our own) → PII masking (kamado.corpus.pii) → exact and near dedup
(kamado.corpus.dedup's fingerprint, MinHash and LSH band keys) → writers (temp + fsync + rename, kamado.durable).

Every record read ends up kept (OUT_DIR/data.jsonl), dropped with the reason of the rule that dropped it
(dropped.jsonl; "duplicate" names the kept document it repeats) or rejected as bad input with its file and line
(rejected.jsonl); report.json, written last, holds the counts and read = kept + dropped + rejected is checked.
This keeps the corpus in memory: for large corpora use the corpus stage (`kamado run`), which runs the same
chain sharded, resumable and on Slurm.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from kamado.corpus.dedup.exact import exact_key, fingerprint_text
from kamado.corpus.dedup.lsh import band_keys
from kamado.corpus.dedup.minhash import MinHasher, estimated_jaccard, shingle_hashes
from kamado.corpus.filters import Rule, apply_filters, build_filters
from kamado.corpus.normalize import normalize
from kamado.corpus.pii import mask_pii
from kamado.corpus.readers import Rejected, iter_source_file, source_files
from kamado.durable import write_atomic
from kamado.corpus.config import QualityRules

SAMPLE = Path(__file__).resolve().parent / "data" / "corpus"


@dataclass
class MostlyDigits(Rule):
    """A rule of our own: `check(ctx)` returns the drop reason or None (ctx.text is the normalized text)."""

    max_fraction: float = 0.3
    name: str = "mostly_digits"

    def check(self, ctx):
        digits = sum(c.isdigit() for c in ctx.text)
        return "mostly_digits" if digits > self.max_fraction * len(ctx.text) else None


class Dedup:
    """The first of each group of duplicates (in reading order) is kept: equal fingerprints (ruby and whitespace
    removed), or MinHash-LSH candidates whose estimated Jaccard on character 5-grams reaches `threshold`."""

    def __init__(self, threshold: float = 0.8, ngram: int = 5, bands: int = 20, rows: int = 10, seed: int = 42):
        self.hasher = MinHasher(bands * rows, seed)
        self.threshold, self.ngram, self.bands, self.rows = threshold, ngram, bands, rows
        self.exact: dict[tuple[int, int], str] = {}
        self.buckets: dict[tuple[int, int], list[tuple[str, object]]] = {}  # (band, key) → kept (id, signature)

    def duplicate_of(self, doc_id: str, text: str) -> str | None:
        fingerprint = fingerprint_text(text)
        key = exact_key(fingerprint)
        if key in self.exact:
            return self.exact[key]
        sig = self.hasher.signature(shingle_hashes(fingerprint, self.ngram))
        bands = [(band, int(k)) for band, k in enumerate(band_keys(sig[None, :], self.bands, self.rows)[:, 0])]
        for bucket in bands:
            for other, other_sig in self.buckets.get(bucket, []):
                if estimated_jaccard(sig, other_sig) >= self.threshold:
                    return other
        self.exact[key] = doc_id
        for bucket in bands:
            self.buckets.setdefault(bucket, []).append((doc_id, sig))
        return None


def run(inputs: list[str], out_dir: Path) -> dict:
    rules = build_filters(QualityRules(min_chars=50, min_hiragana_fraction=0.15)) + [MostlyDigits()]
    dedup = Dedup()
    kept: list[dict] = []
    dropped: list[dict] = []
    rejected: list[dict] = []
    pii: Counter = Counter()
    for path in source_files(inputs):
        for loc, doc in iter_source_file(path, "auto", "text", "id", source=Path(path).name):
            where = f"{loc.path}:{loc.line}"
            if isinstance(doc, Rejected):
                rejected.append({"where": where, "reason": doc.reason, "detail": doc.detail})
                continue
            doc["text"] = normalize(doc["text"])
            reason, original = apply_filters(rules, doc), None
            if reason is None:
                doc["text"], masked = mask_pii(doc["text"])
                pii.update(masked)
                original = dedup.duplicate_of(doc["id"], doc["text"])
                reason = "duplicate" if original else None
            if reason:
                dropped.append({"id": doc["id"], "where": where, "reason": reason, "duplicate_of": original})
            else:
                kept.append(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("data.jsonl", kept), ("dropped.jsonl", dropped), ("rejected.jsonl", rejected)):
        write_atomic(out_dir / name, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    report = {"read": len(kept) + len(dropped) + len(rejected), "kept": len(kept),
              "dropped": dict(Counter(r["reason"] for r in dropped)),
              "rejected": dict(Counter(r["reason"] for r in rejected)), "pii_masked": dict(pii)}
    assert report["read"] == report["kept"] + sum(report["dropped"].values()) + sum(report["rejected"].values())
    write_atomic(out_dir / "report.json", json.dumps(report, ensure_ascii=False, indent=2))
    return report


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    result = run(sys.argv[2:] or [str(SAMPLE / "*")], Path(sys.argv[1]))
    print(json.dumps(result, ensure_ascii=False))
