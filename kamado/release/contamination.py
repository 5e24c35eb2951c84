"""Contamination report: which evaluation items share a long character n-gram with the training corpus.

Japanese has no spaces, so n-grams are of characters (NFKC, whitespace removed), not words; the default n=20 is
long enough that ordinary phrases do not match by chance. The evaluation side is small: its n-grams go into a
set, and the corpus is streamed once, each of its n-grams looked up in that set (memory stays at the size of the
evaluation data however large the corpus is).
"""

from __future__ import annotations

import gzip
import json
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

from kamado.release.eval.data import Item, read_items


def normalize(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def item_segments(item: Item) -> list[str]:
    """The texts of an item a model could have memorised: each prompt field and the answer(s), kept apart so
    that no n-gram spans two fields (a question glued to a choice is not text anyone wrote)."""
    segments = [str(v) for k, v in item.fields.items() if k != "title" and not k.startswith("choice")]
    segments += item.answers + ([item.choices[item.label]] if item.choices and item.label is not None else [])
    return [normalize(s) for s in segments]


def corpus_texts(corpus_dir: Path) -> Iterator[str]:
    shards = sorted((corpus_dir / "data").glob("shard-*.jsonl.gz"))
    if not shards:
        raise FileNotFoundError(f"contamination: no corpus shards under {corpus_dir / 'data'}")
    for shard in shards:
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)["text"]


def contamination(tasks: dict[str, list[Item]], corpus: Iterable[str], n: int = 20, examples: int = 5) -> dict:
    """For each task: items checked, items with at least one n-gram in the corpus, items with half or more."""
    grams_of: dict[str, list[set[str]]] = {}
    index: set[str] = set()
    for task, items in tasks.items():
        grams_of[task] = []
        for item in items:
            g = {t[i:i + n] for t in item_segments(item) for i in range(len(t) - n + 1)}
            grams_of[task].append(g)
            index |= g
    found: set[str] = set()
    docs = chars = 0
    for text in corpus:
        t = normalize(text)
        docs += 1
        chars += len(t)
        found.update(t[i:i + n] for i in range(len(t) - n + 1) if t[i:i + n] in index)
    report = {"ngram_chars": n, "corpus_documents": docs, "corpus_characters": chars, "tasks": {}}
    for task, items in tasks.items():
        any_hit, half, too_short, ids = 0, 0, 0, []
        for item, g in zip(items, grams_of[task]):
            if not g:
                too_short += 1
                continue
            hits = len(g & found)
            if hits:
                any_hit += 1
                if len(ids) < examples:
                    ids.append(item.id)
            half += hits * 2 >= len(g)
        checked = len(items) - too_short
        report["tasks"][task] = {"items": len(items), "shorter_than_n": too_short, "with_any_overlap": any_hit,
                                 "with_half_overlap": half, "overlap_rate": round(any_hit / checked, 4) if checked else None,
                                 "example_ids": ids}
    return report


def task_items(task_cfgs) -> dict[str, list[Item]]:
    """The items each (non-perplexity) task scores, keyed by task name (first occurrence wins)."""
    out: dict[str, list[Item]] = {}
    for t in task_cfgs:
        if t.name == "perplexity" or t.name in out:
            continue
        items = read_items(t.name, t.path)
        out[t.name] = items[: t.limit] if t.limit else items
    return out


def format_contamination(report: dict) -> str:
    n = report["ngram_chars"]
    lines = [f"| task | items | checked (≥ {n} chars) | with a shared {n}-char n-gram | with ≥ half shared |", "|---|---|---|---|---|"]
    for task, r in report["tasks"].items():
        lines.append(f"| {task} | {r['items']:,} | {r['items'] - r['shorter_than_n']:,} | {r['with_any_overlap']:,} | "
                     f"{r['with_half_overlap']:,} |")
    return "\n".join(lines)
