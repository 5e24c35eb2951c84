"""Decontamination: drop training documents that share a long character n-gram with an evaluation set.

Evaluation files are JSONL or JSON (plain or .gz); every string anywhere in a record (questions, contexts,
answers, choices) whose fingerprint has at least `n` characters is an evaluation text; shorter strings cannot
match and are counted as skipped. A document is contaminated when any of its n-grams (on the same fingerprint
text as dedup) equals an evaluation n-gram. The eval n-grams are held as one sorted uint64 array per task: memory
grows with the evaluation sets (8 bytes per n-gram), never with the corpus.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kamado.corpus.dedup.exact import fingerprint_text
from kamado.corpus.dedup.minhash import shingle_hashes


@dataclass
class EvalNgrams:
    n: int
    hashes: np.ndarray  # sorted distinct n-gram hashes
    origin: np.ndarray  # index into `sources`, per hash (the first eval text that had it)
    sources: list[str] = field(default_factory=list)  # "file:record"
    skipped_short: int = 0

    def match(self, doc_hashes: np.ndarray) -> str | None:
        """The eval record a document shares an n-gram with, or None."""
        if len(self.hashes) == 0 or len(doc_hashes) == 0:
            return None
        pos = np.searchsorted(self.hashes, doc_hashes)
        pos[pos == len(self.hashes)] = 0
        hit = np.flatnonzero(self.hashes[pos] == doc_hashes)
        return self.sources[int(self.origin[pos[hit[0]]])] if len(hit) else None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if whole is not None:  # one JSON value: a list of records, SQuAD-style {"data": [...]}, or one record (line 1)
        if isinstance(whole, dict) and isinstance(whole.get("data"), list):
            yield from ((f"{path.name}:data[{i}]", rec) for i, rec in enumerate(whole["data"]))
        elif isinstance(whole, list):
            yield from ((f"{path.name}:[{i}]", rec) for i, rec in enumerate(whole))
        else:
            yield f"{path.name}:1", whole
        return
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield f"{path.name}:{line_no}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc


def load_eval_ngrams(paths: list[str], n: int) -> EvalNgrams:
    hashes, origins, sources, skipped = [], [], [], 0
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: evaluation file for decontamination not found (corpus.dedup.decontam_paths)")
        for where, rec in _records(path):
            for s in _strings(rec):
                fp = fingerprint_text(s)
                if len(fp) < n:
                    skipped += 1
                    continue
                h = np.unique(shingle_hashes(fp, n))
                hashes.append(h)
                origins.append(np.full(len(h), len(sources), dtype=np.int32))
                sources.append(where)
    if not hashes:
        return EvalNgrams(n, np.empty(0, np.uint64), np.empty(0, np.int32), sources, skipped)
    allh, allo = np.concatenate(hashes), np.concatenate(origins)
    allh, first = np.unique(allh, return_index=True)
    return EvalNgrams(n, allh, allo[first], sources, skipped)
